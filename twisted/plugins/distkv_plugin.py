"""The ``distkv`` twistd plugin: ``twistd -n distkv --port 9000 --peers ...``."""

from twisted.application.service import ServiceMaker

distkv = ServiceMaker(
    "DistKV",
    "distkv.tap",
    "A replicated key-value node (text protocol, multi-master replication).",
    "distkv",
)
