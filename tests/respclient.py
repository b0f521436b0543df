"""One RESP client connection to an in-process node over ``StringTransport``."""

from __future__ import annotations

from typing import Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from distkv.front.frontdoor import FrontDoor
from distkv.node import Node


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def connect(node: Node, port: int = 6000) -> Tuple[FrontDoor, StringTransport]:
    """A client on 127.0.0.1:``port`` of a node listening on 127.0.0.1:9000."""
    address = IPv4Address("TCP", "127.0.0.1", port)
    proto = node.factory().buildProtocol(address)
    transport = StringTransport(peerAddress=address,
                                hostAddress=IPv4Address("TCP", "127.0.0.1", 9000))
    proto.makeConnection(transport)
    return proto, transport


def ask(proto: FrontDoor, transport: StringTransport, *args: bytes) -> bytes:
    """The node's answer to one request."""
    transport.clear()
    proto.dataReceived(command(*args))
    return transport.value()
