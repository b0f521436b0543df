"""``python -m distkv.cli``: the ``distkv`` console script."""

from distkv.cli.main import run

run()
