"""Client authentication over StringTransport, in RESP and the text protocol:
NOAUTH before AUTH, AUTH and HELLO ... AUTH, WRONGPASS, a read-only user's
NOPERM, the failures counted in INFO and STATUS and logged without the
password, and every command classified by the access it needs. Replies are
Redis 7.0's, byte for byte (checked against redis-server 7.0.15)."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Sequence, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from distkv.front.access import ACCESS, OPEN, READ, WRITE
from distkv.front.auth import UsersFileError, parse_users
from distkv.front.commands import Outcome, checked
from distkv.front.frontdoor import FrontDoor
from distkv.front.replies import OK, Session
from distkv.node import Node

ADDRESS = IPv4Address("TCP", "127.0.0.1", 6000)
USERS = b"""# who may connect
default readwrite >s3cret
dash read >dash pw
app readwrite #%s
""" % hashlib.sha256(b"app-pw").hexdigest().encode()

NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
HELLO_NOAUTH = (
    b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    b"HELLO AUTH <user> <pass> option can be used to authenticate the client and select "
    b"the RESP protocol version at the same time\r\n"
)


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def connect(node: Node) -> Tuple[FrontDoor, StringTransport]:
    proto = node.factory().buildProtocol(ADDRESS)
    transport = StringTransport(peerAddress=ADDRESS)
    proto.makeConnection(transport)
    return proto, transport


class Conversation:
    """One connection: each ``say`` returns the bytes the node answered."""

    def __init__(self, node: Node) -> None:
        self.proto, self.transport = connect(node)

    def say(self, data: bytes) -> bytes:
        self.transport.clear()
        self.proto.dataReceived(data)
        return self.transport.value()

    def ask(self, *args: bytes) -> bytes:
        return self.say(command(*args))


def secured(clock: Clock) -> Node:
    return Node(clock, "n", users=parse_users(USERS))


def info_stats(node: Node) -> Dict[str, str]:
    talk = Conversation(node)
    assert talk.ask(b"AUTH", b"s3cret") == b"+OK\r\n"
    reply = talk.ask(b"INFO", b"stats").decode()
    return dict(line.split(":", 1) for line in reply.split("\r\n") if ":" in line)


class RespAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = secured(self.clock)

    def test_every_command_but_auth_hello_quit_gets_noauth_before_auth(self) -> None:
        """Until it authenticates, a client gets Redis's NOAUTH for every command in
        the table but the open ones, whatever the case of its name; nothing runs."""
        dispatcher = self.node.dispatcher
        refused = 0
        for name in dispatcher.names():
            if dispatcher.access[name] == OPEN:
                continue
            least = abs(dispatcher.arity(name)) - 1
            for spelled in (name, name.lower()):
                talk = Conversation(self.node)
                reply = talk.ask(spelled, *[b"0"] * least)
                self.assertEqual(reply, NOAUTH, spelled)
                refused += 1
        self.assertGreater(refused, 30)
        self.assertEqual(len(self.node.store), 0)
        self.assertEqual(self.node.dispatcher.accounts.failures, 0)

    def test_arity_and_unknown_commands_are_answered_before_noauth(self) -> None:
        """As in Redis, an unknown command or a wrong argument count gets its own
        error even before authentication."""
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"GET"), b"-ERR wrong number of arguments for 'get' command\r\n")
        self.assertEqual(
            talk.ask(b"FOOBA"), b"-ERR unknown command 'FOOBA', with args beginning with: \r\n"
        )
        self.assertEqual(talk.ask(b"AUTH"), b"-ERR wrong number of arguments for 'auth' command\r\n")
        self.assertEqual(talk.ask(b"AUTH", b"a", b"b", b"c"), b"-ERR syntax error\r\n")

    def test_auth_with_the_default_password_lets_every_command_run(self) -> None:
        """AUTH <password> and AUTH default <password> log in as the default user."""
        for auth in ((b"AUTH", b"s3cret"), (b"AUTH", b"default", b"s3cret")):
            talk = Conversation(self.node)
            self.assertEqual(talk.ask(*auth), b"+OK\r\n")
            self.assertEqual(talk.ask(b"SET", b"k", b"v"), b"+OK\r\n")
            self.assertEqual(talk.ask(b"get", b"k"), b"$1\r\nv\r\n")
            self.assertEqual(talk.ask(b"PING"), b"+PONG\r\n")

    def test_hashed_password_in_the_users_file_is_checked(self) -> None:
        """A user given as #<sha256 hex> logs in with the password that hashes to it."""
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"AUTH", b"app", hashlib.sha256(b"app-pw").hexdigest().encode()),
                         WRONGPASS)
        self.assertEqual(talk.ask(b"AUTH", b"app", b"app-pw"), b"+OK\r\n")
        self.assertEqual(talk.ask(b"SET", b"k", b"v"), b"+OK\r\n")

    def test_auth_earlier_in_the_same_read_applies_to_the_requests_after_it(self) -> None:
        """A pipeline "NOAUTH'd GET, AUTH, SET, GET" in one read: only the first is refused."""
        talk = Conversation(self.node)
        reply = talk.say(command(b"GET", b"k") + command(b"AUTH", b"s3cret")
                         + command(b"SET", b"k", b"v") + command(b"GET", b"k"))
        self.assertEqual(reply, NOAUTH + b"+OK\r\n+OK\r\n$1\r\nv\r\n")

    def test_wrong_password_or_user_gets_wrongpass_is_counted_and_changes_nothing(self) -> None:
        """Wrong passwords and unknown users get Redis's WRONGPASS, the connection
        stays unauthenticated, and each failure counts in INFO and STATUS."""
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"AUTH", b"nope"), WRONGPASS)
        self.assertEqual(talk.ask(b"AUTH", b"default", b"nope"), WRONGPASS)
        self.assertEqual(talk.ask(b"AUTH", b"nobody", b"s3cret"), WRONGPASS)
        self.assertEqual(talk.ask(b"AUTH", b"dash", b"s3cret"), WRONGPASS)
        self.assertEqual(talk.ask(b"GET", b"k"), NOAUTH)
        self.assertEqual(info_stats(self.node)["acl_access_denied_auth"], "4")
        self.assertIn("auth_failures 4", self.node.status_lines())
        self.assertIn("client_auth required", self.node.status_lines())

    def test_a_failed_auth_keeps_the_user_already_logged_in(self) -> None:
        """As in Redis, a wrong AUTH after a good one leaves the connection logged in."""
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"AUTH", b"s3cret"), b"+OK\r\n")
        self.assertEqual(talk.ask(b"AUTH", b"wrong"), WRONGPASS)
        self.assertEqual(talk.ask(b"SET", b"k", b"v"), b"+OK\r\n")

    def test_hello_3_auth_logs_in_and_switches_to_resp3(self) -> None:
        """HELLO 3 AUTH default <password> answers the RESP3 map and RESP3 replies follow."""
        talk = Conversation(self.node)
        reply = talk.ask(b"HELLO", b"3", b"AUTH", b"default", b"s3cret", b"SETNAME", b"me")
        self.assertTrue(reply.startswith(b"%8\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), reply)
        self.assertIn(b"$5\r\nproto\r\n:3\r\n", reply)
        self.assertEqual(talk.ask(b"GET", b"missing"), b"_\r\n")
        self.assertEqual(talk.ask(b"CLIENT", b"GETNAME"), b"$2\r\nme\r\n")

    def test_hello_before_auth_is_refused_in_redis_order(self) -> None:
        """HELLO checks its version, then its options, then the password, then
        whether the client is logged in; a refused HELLO changes neither the
        protocol nor the name."""
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"HELLO", b"4", b"AUTH", b"default", b"s3cret"),
                         b"-NOPROTO unsupported protocol version\r\n")
        self.assertEqual(talk.ask(b"HELLO", b"3", b"auth", b"default"),
                         b"-ERR Syntax error in HELLO option 'auth'\r\n")
        self.assertEqual(talk.ask(b"HELLO"), HELLO_NOAUTH)
        self.assertEqual(talk.ask(b"HELLO", b"3", b"SETNAME", b"x"), HELLO_NOAUTH)
        self.assertEqual(
            talk.ask(b"HELLO", b"3", b"SETNAME", b"x", b"AUTH", b"default", b"bad"), WRONGPASS
        )
        self.assertEqual(talk.ask(b"GET", b"missing"), NOAUTH)
        self.assertEqual(talk.ask(b"AUTH", b"s3cret"), b"+OK\r\n")
        self.assertEqual(talk.ask(b"GET", b"missing"), b"$-1\r\n")  # still RESP2
        self.assertEqual(talk.ask(b"CLIENT", b"GETNAME"), b"$-1\r\n")  # no name set

    def test_read_only_user_reads_but_gets_noperm_on_every_write(self) -> None:
        """A read user runs GET, MGET, KEYS, INFO; SET, DEL and MSET get Redis 7.0's
        NOPERM (an arity error first), change nothing, and are counted."""
        self.node.store.set(b"k", b"v")
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"AUTH", b"dash", b"dash pw"), b"+OK\r\n")
        self.assertEqual(talk.ask(b"GET", b"k"), b"$1\r\nv\r\n")
        self.assertEqual(talk.ask(b"MGET", b"k"), b"*1\r\n$1\r\nv\r\n")
        self.assertEqual(talk.ask(b"KEYS", b"*"), b"*1\r\n$1\r\nk\r\n")
        self.assertEqual(talk.ask(b"SET", b"k", b"x"),
                         b"-NOPERM this user has no permissions to run the 'set' command\r\n")
        self.assertEqual(talk.ask(b"del", b"k"),
                         b"-NOPERM this user has no permissions to run the 'del' command\r\n")
        self.assertEqual(talk.ask(b"MSET", b"a", b"1"),
                         b"-NOPERM this user has no permissions to run the 'mset' command\r\n")
        self.assertEqual(talk.ask(b"SET"), b"-ERR wrong number of arguments for 'set' command\r\n")
        self.assertEqual(self.node.store.get(b"k"), b"v")
        self.assertEqual(len(self.node.store), 1)
        self.assertEqual(info_stats(self.node)["acl_access_denied_cmd"], "3")
        self.assertIn("commands_denied 3", self.node.status_lines())

    def test_read_only_user_sees_the_node_but_cannot_change_it(self) -> None:
        """A read user (a dashboard) runs CLUSTER NODES, CLUSTER MYID and MEMBERS, but
        CLUSTER FORGET, LEAVE, CLIENT KILL (other users' connections) and CONFIG
        RESETSTAT (the security counters) get NOPERM and change nothing; a writer may."""
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"AUTH", b"dash", b"dash pw"), b"+OK\r\n")
        self.assertTrue(talk.ask(b"CLUSTER", b"NODES").startswith(b"$"))  # no error
        self.assertEqual(talk.ask(b"CLUSTER", b"MYID"), b"$1\r\nn\r\n")
        self.assertTrue(talk.ask(b"MEMBERS").startswith(b"$"))
        self.assertEqual(talk.ask(b"CLUSTER", b"FORGET", b"other"),
                         b"-NOPERM this user has no permissions to run the 'cluster|forget' "
                         b"command\r\n")
        self.assertEqual(talk.ask(b"LEAVE"),
                         b"-NOPERM this user has no permissions to run the 'leave' command\r\n")
        self.assertEqual(talk.ask(b"CLIENT", b"KILL", b"SKIPME", b"yes"),
                         b"-NOPERM this user has no permissions to run the 'client|kill' "
                         b"command\r\n")
        self.assertEqual(talk.ask(b"CONFIG", b"RESETSTAT"),
                         b"-NOPERM this user has no permissions to run the 'config|resetstat' "
                         b"command\r\n")
        self.assertEqual(info_stats(self.node)["acl_access_denied_cmd"], "4")
        self.assertEqual(talk.ask(b"AUTH", b"app", b"app-pw"), b"+OK\r\n")
        self.assertEqual(talk.ask(b"CLUSTER", b"FORGET", b"other"),
                         b"-ERR Unknown node other\r\n")

    def test_read_only_user_who_logs_in_as_a_writer_mid_pipeline_can_write(self) -> None:
        """The rights are those of the user logged in when each request runs."""
        talk = Conversation(self.node)
        reply = talk.say(command(b"AUTH", b"dash", b"dash pw") + command(b"SET", b"k", b"1")
                         + command(b"AUTH", b"app", b"app-pw") + command(b"SET", b"k", b"2"))
        self.assertEqual(reply, b"+OK\r\n-NOPERM this user has no permissions to run the "
                                b"'set' command\r\n+OK\r\n+OK\r\n")
        self.assertEqual(self.node.store.get(b"k"), b"2")

    def test_quit_works_before_auth(self) -> None:
        """QUIT needs no password: +OK, then the connection closes."""
        talk = Conversation(self.node)
        self.assertEqual(talk.ask(b"QUIT"), b"+OK\r\n")
        self.assertTrue(talk.transport.disconnecting)

    def test_the_password_is_in_neither_config_get_nor_info(self) -> None:
        """CONFIG GET * and INFO all show nothing of the passwords or their hashes."""
        talk = Conversation(self.node)
        talk.ask(b"AUTH", b"s3cret")
        shown = talk.ask(b"CONFIG", b"GET", b"*") + talk.ask(b"INFO", b"all")
        for secret in (b"s3cret", b"dash pw", b"app-pw", hashlib.sha256(b"app-pw").hexdigest().encode()):
            self.assertNotIn(secret, shown)
        self.assertIn(b"acl_access_denied_auth:0", shown)

    def test_failures_are_logged_once_a_second_without_the_password(self) -> None:
        """Each failure is logged (one line a second at most, counting those held
        back), naming a known user but never the password nor an unknown name."""
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        talk = Conversation(self.node)
        talk.ask(b"AUTH", b"dash", b"guess-1")
        talk.ask(b"AUTH", b"guess-2")
        talk.ask(b"AUTH", b"guess-3-as-name", b"guess-4")
        self.clock.advance(1.5)
        talk.ask(b"AUTH", b"default", b"guess-5")
        lines = [formatEvent(event) for event in events if "Authentication" in formatEvent(event)]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("user dash", lines[0])
        self.assertIn("127.0.0.1", lines[0])
        self.assertIn("2 similar warnings suppressed", lines[1])
        self.assertIn("failed logins so far: 4", lines[1])
        for line in lines:
            self.assertNotIn("guess", line)


class NoPasswordTests(SynchronousTestCase):
    """A node without passwords answers AUTH as a Redis server without requirepass."""

    def setUp(self) -> None:
        self.node = Node(Clock(), "n")

    def test_auth_without_any_password_configured(self) -> None:
        talk = Conversation(self.node)
        self.assertEqual(
            talk.ask(b"AUTH", b"x"),
            b"-ERR AUTH <password> called without any password configured for the default "
            b"user. Are you sure your configuration is correct?\r\n",
        )
        self.assertEqual(talk.ask(b"AUTH", b"default", b"anything"), b"+OK\r\n")
        self.assertEqual(talk.ask(b"AUTH", b"dash", b"x"), WRONGPASS)
        reply = talk.ask(b"HELLO", b"2", b"AUTH", b"default", b"x")
        self.assertTrue(reply.startswith(b"*16\r\n"), reply)
        self.assertEqual(talk.ask(b"HELLO", b"3", b"AUTH", b"dash", b"x"), WRONGPASS)
        self.assertEqual(talk.ask(b"SET", b"k", b"v"), b"+OK\r\n")
        self.assertIn("client_auth none", self.node.status_lines())
        self.assertIn("auth_failures 2", self.node.status_lines())

    def test_sessions_run_from_the_full_table(self) -> None:
        """Without passwords a client's requests are looked up in the dispatcher's
        own table: no check stands between a request and its command."""
        proto, _ = connect(self.node)
        proto.dataReceived(command(b"PING"))
        inner = proto.inner
        self.assertIs(inner.session.commands, self.node.dispatcher.commands)  # type: ignore[union-attr]


TEXT_SCRIPT: Sequence[Tuple[bytes, bytes]] = [
    (b"GET k\r\n", b"ERR NOAUTH Authentication required.\r\n"),
    (b"set k v\n", b"ERR NOAUTH Authentication required.\r\n"),
    (b"AUTH wrong\n", b"ERR WRONGPASS invalid username-password pair or user is disabled.\r\n"),
    (b"HELLO\n", b"ERR " + HELLO_NOAUTH[1:]),
    (b"AUTH s3cret\n", b"OK\r\n"),
    (b"SET k hello world\n", b"OK\r\n"),
    (b"GET k\n", b"hello world\r\n"),
    (b"AUTH dash pw\n", b"ERR WRONGPASS invalid username-password pair or user is disabled.\r\n"),
    (b"AUTH app app-pw\n", b"OK\r\n"),
    (b"DEL k\n", b"1\r\n"),
]


class TextAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = secured(self.clock)

    def test_text_protocol_replies_carry_redis_words(self) -> None:
        """Over the text protocol: NOAUTH, WRONGPASS, then AUTH works; the errors
        are ERR lines with Redis's words, the connection stays usable."""
        talk = Conversation(self.node)
        for line, reply in TEXT_SCRIPT:
            self.assertEqual(talk.say(line), reply, line)

    def test_text_read_only_user_gets_noperm(self) -> None:
        """A read user over the text protocol reads, and gets NOPERM for writes."""
        node = Node(self.clock, "m", users=parse_users(b"ro read >ro-pw\n"))
        node.store.set(b"k", b"v")
        talk = Conversation(node)
        self.assertEqual(talk.say(b"AUTH ro ro-pw\n"), b"OK\r\n")
        self.assertEqual(talk.say(b"GET k\n"), b"v\r\n")
        self.assertEqual(
            talk.say(b"SET k v\n"),
            b"ERR NOPERM this user has no permissions to run the 'set' command\r\n",
        )
        self.assertEqual(talk.say(b"QUIT\n"), b"OK\r\n")

    def test_text_status_before_auth_is_refused(self) -> None:
        """STATUS (a node's state and peers) is not shown to a client that has not logged in."""
        talk = Conversation(self.node)
        self.assertEqual(talk.say(b"STATUS\n"), b"ERR NOAUTH Authentication required.\r\n")
        talk.say(b"AUTH s3cret\n")
        self.assertIn(b"client_auth required\r\n", talk.say(b"STATUS\n"))


class CommandAccessTests(SynchronousTestCase):
    def test_every_command_declares_its_access(self) -> None:
        """Every command in the table is classified open, read or write; the writes
        and the open commands are exactly those that must be."""
        dispatcher = Node(Clock(), "n").dispatcher
        self.assertEqual(sorted(dispatcher.access), dispatcher.names())
        self.assertTrue(set(dispatcher.access.values()) <= set(ACCESS))
        writes = {name for name, access in dispatcher.access.items() if access == WRITE}
        self.assertEqual(writes, {b"SET", b"DEL", b"MSET", b"LEAVE", b"APPEND", b"SETRANGE",
                                  b"MSETNX", b"UNLINK", b"RENAME", b"RENAMENX", b"COPY",
                                  b"FLUSHDB", b"FLUSHALL", b"BACKUP",
                                  b"SETEX", b"PSETEX", b"SETNX", b"GETSET", b"GETDEL", b"GETEX",
                                  b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT", b"PERSIST",
                                  b"INCR", b"DECR", b"INCRBY", b"DECRBY", b"INCRBYFLOAT"})
        opened = {name for name, access in dispatcher.access.items() if access == OPEN}
        self.assertEqual(opened, {b"AUTH", b"HELLO", b"QUIT"})

    def test_a_command_added_later_must_say_its_access_and_is_gated(self) -> None:
        """``Dispatcher.add`` refuses a command without a known access; one added as
        a write is refused to a read user and, before AUTH, to everyone."""
        node = secured(Clock())
        dispatcher = node.dispatcher
        ran: List[List[bytes]] = []

        def touch(args: Sequence[bytes], session: Session) -> Outcome:
            ran.append(list(args))
            return OK

        with self.assertRaises(ValueError):
            dispatcher.add(b"TOUCHY", checked(touch, 1, 1), 1, 1, "admin")
        dispatcher.add(b"TOUCHY", checked(touch, 1, 1), 1, 1, WRITE)
        dispatcher.add(b"LOOK", checked(touch, 1, 1), 1, 1, READ)
        talk = Conversation(node)
        self.assertEqual(talk.ask(b"TOUCHY", b"a"), NOAUTH)
        self.assertEqual(talk.ask(b"look", b"a"), NOAUTH)
        talk.ask(b"AUTH", b"dash", b"dash pw")
        self.assertEqual(talk.ask(b"touchy", b"a"),
                         b"-NOPERM this user has no permissions to run the 'touchy' command\r\n")
        self.assertEqual(talk.ask(b"LOOK", b"b"), b"+OK\r\n")
        talk.ask(b"AUTH", b"s3cret")
        self.assertEqual(talk.ask(b"TOUCHY", b"c"), b"+OK\r\n")
        self.assertEqual(ran, [[b"b"], [b"c"]])

    def test_command_info_reports_the_access_as_redis_flags(self) -> None:
        """COMMAND INFO shows write for writes and no-auth for the open commands."""
        talk = Conversation(Node(Clock(), "n"))
        reply = talk.ask(b"COMMAND", b"INFO", b"SET", b"GET", b"AUTH")
        self.assertEqual(
            reply,
            b"*3\r\n*6\r\n$3\r\nset\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:1\r\n:1\r\n"
            b"*6\r\n$3\r\nget\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n"
            b"*6\r\n$4\r\nauth\r\n:-2\r\n*1\r\n+no-auth\r\n:0\r\n:0\r\n:0\r\n",
        )


class UsersFileTests(SynchronousTestCase):
    def test_users_file_lines_and_comments(self) -> None:
        """Names, rights and passwords (kept with their spaces, or as SHA-256 hex)."""
        users = parse_users(USERS)
        self.assertEqual(sorted(users), [b"app", b"dash", b"default"])
        self.assertEqual(users[b"dash"].digest, hashlib.sha256(b"dash pw").digest())
        self.assertFalse(users[b"dash"].can_write)
        self.assertEqual(users[b"app"].digest, hashlib.sha256(b"app-pw").digest())
        self.assertTrue(users[b"app"].can_write)
        crlf = parse_users(b"u read >p w \r\n")
        self.assertEqual(crlf[b"u"].digest, hashlib.sha256(b"p w ").digest())

    def test_bad_lines_are_named_by_number(self) -> None:
        """Each kind of bad line is refused with its line number and what is wrong."""
        cases = [
            (b"# c\n\nu write >p\n", "line 3: unknown rights 'write': use read or readwrite"),
            (b"u read >a\nu readwrite >b\n", "line 2: user 'u' is listed twice"),
            (b"u read p\n", "line 1: expected '<name> <read|readwrite> ><password>'"),
            (b"u read\n", "line 1: expected"),
            (b"u read >\n", "line 1: empty password for user 'u'"),
            (b"u read #abc\n", "line 1: a '#' password is the password's SHA-256 as 64 hex"),
            (b"# nobody\n", "the file lists no user"),
        ]
        for data, message in cases:
            with self.assertRaises(UsersFileError) as caught:
                parse_users(data)
            self.assertIn(message, str(caught.exception), data)
