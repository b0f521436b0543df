"""``distkv``, the command-line client: a prompt, one-shot commands, the
cluster view, dump/load and backup (see :mod:`distkv.cli.main`). It speaks
RESP to a node over a blocking socket (:mod:`distkv.cli.client`) and imports
nothing from Twisted, so it starts fast and runs anywhere the package does.
"""
