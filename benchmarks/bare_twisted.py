"""A bare Twisted key-value server: a dict and just enough RESP for redis-benchmark.

This is the reference point of issue 4 ("a bare Twisted server that keeps a
dict and speaks minimal RESP"): what Twisted itself costs per request, with no
versioning, replication, journal or command layer. ``vs_redis.py`` runs it
under CPython and PyPy next to DistKV and redis-server.

    python benchmarks/bare_twisted.py --port 7000

It understands RESP arrays of bulk strings and inline commands (``PING\\r\\n``,
which redis-benchmark's PING_INLINE test sends) and answers ``SET key value``,
``GET key``, ``DEL key...``, ``PING [msg]``, ``ECHO msg``, ``DBSIZE``,
``CONFIG GET name`` (an empty value, as redis-benchmark only prints it) and
``QUIT``; anything else gets ``-ERR unknown command``. Like DistKV it sets
``TCP_NODELAY`` on every connection, listens with a backlog of 1024, parses
everything one read delivered and answers it with a single write. There are no
limits and no protocol-error recovery: it is a yardstick, not a server.
Standard library plus Twisted; Python 3.9+.
"""

import argparse
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

OK = b"+OK\r\n"
NIL = b"$-1\r\n"
PONG = b"+PONG\r\n"


def bulk(value):
    return b"$%d\r\n%s\r\n" % (len(value), value)


class BareResp(Protocol):
    def __init__(self, data):
        self.data = data
        self.buf = b""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, chunk):
        buf = self.buf + chunk if self.buf else chunk
        end = len(buf)
        pos = 0
        out = []
        while pos < end:
            if buf[pos] == 42:  # '*': an array of bulk strings
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                argc = int(buf[pos + 1:nl])
                p = nl + 2
                args = []
                for _ in range(argc):
                    nl = buf.find(b"\r\n", p)
                    if nl < 0:
                        break
                    start = nl + 2
                    stop = start + int(buf[p + 1:nl])
                    if stop + 2 > end:
                        break
                    args.append(buf[start:stop])
                    p = stop + 2
                else:
                    pos = p
                    out.append(self.run(args))
                    continue
                break  # incomplete request: wait for more bytes
            nl = buf.find(b"\n", pos)  # an inline command
            if nl < 0:
                break
            args = buf[pos:nl].split()
            pos = nl + 1
            if args:
                out.append(self.run(args))
        self.buf = buf[pos:]
        if out:
            self.transport.write(b"".join(out))

    def run(self, args):
        name = args[0].upper()
        if name == b"GET" and len(args) == 2:
            value = self.data.get(args[1])
            return NIL if value is None else bulk(value)
        if name == b"SET" and len(args) == 3:
            self.data[args[1]] = args[2]
            return OK
        if name == b"PING":
            return PONG if len(args) == 1 else bulk(args[1])
        if name == b"ECHO" and len(args) == 2:
            return bulk(args[1])
        if name == b"DEL":
            gone = sum(1 for key in args[1:] if self.data.pop(key, None) is not None)
            return b":%d\r\n" % gone
        if name == b"DBSIZE":
            return b":%d\r\n" % len(self.data)
        if name == b"CONFIG" and len(args) == 3 and args[1].upper() == b"GET":
            return b"*2\r\n" + bulk(args[2]) + bulk(b"")
        if name == b"QUIT":
            self.transport.loseConnection()
            return OK
        return b"-ERR unknown command '%s'\r\n" % args[0]


class BareFactory(Factory):
    def __init__(self):
        self.data = {}

    def buildProtocol(self, addr):
        return BareResp(self.data)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on (default %(default)s)")
    args = parser.parse_args(argv)
    reactor.listenTCP(args.port, BareFactory(), backlog=1024, interface=args.interface)
    print(f"bare_twisted listening on {args.interface}:{args.port} "
          f"({sys.implementation.name}, reactor {type(reactor).__name__})", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
