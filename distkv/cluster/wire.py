"""The peer-to-peer wire format: handshake lines and binary frames, sans-IO.

A peer connection starts on the shared client port with one text line, so the
front door can tell it from a client::

    DISTKV-PEER 6 <node-id> <incarnation> <port> <nonce>\\r\\n      (connecting side)
    DISTKV-PEER-CHALLENGE 6 <node-id> <nonce>\\r\\n             (accepting side, with a secret)
    DISTKV-PEER-PROOF <proof>\\r\\n                              (connecting side, with a secret)
    DISTKV-PEER-OK 6 <node-id> <incarnation> <seen> <state> <proof>\\r\\n (accepting side)
    DISTKV-PEER-ERR <code> <message>\\r\\n                       (refusal, then close)

``port`` is the port the caller listens on (``-`` if none is known): with the
caller's address it names the caller's place in the cluster, so a node that
comes back there under a new id replaces the old one. ``seen`` is the highest
sequence number of the caller's own writes that the accepting node has
applied, and ``state`` is ``serving`` or ``loading``: a caller that holds
fewer than a serving node has seen was restored from an older copy of its data.

Nodes with a cluster secret (``--cluster-secret-file``) prove it to each
other before either acts on the other's data (see :mod:`distkv.cluster.handshake`):
the caller's ``nonce`` is 64 hex digits of fresh randomness, the accepting
side answers with who it is and a nonce of its own, the caller sends its
proof (64 hex digits: an HMAC-SHA256 of the secret over the greeting and
challenge lines), and only once that holds does the accepting side vet the
caller and answer ``OK`` with its own proof (over both lines and its ``OK``
line without the proof). Without a secret ``nonce`` and ``proof`` are ``-``
and the two middle lines are skipped; a node refuses a caller whose
``nonce`` says the other thing (``DISTKV-PEER-ERR cluster-secret ...``).
With a secret, everything after the handshake travels in records
(``length:u32 payload tag:16``, see :mod:`distkv.cluster.handshake`) whose
payloads, joined, are the frame stream below.

After the handshake both directions carry frames, and either end may push its
writes and run anti-entropy rounds over the connection: a 4-byte big-endian
length, then a body whose first byte names its kind::

    W seq:u64 ms:u64 counter:u32 flags:u8 node-len:u16 node [expires:u64]
                         key-len:u32 key value
                         flags 1: a tombstone (no value); flags 2: the value
                         expires at ``expires`` (ms since the epoch), which
                         follows the node id; flags 4: a counter key, whose
                         value is its whole encoded state (see
                         :mod:`distkv.store.counter`; the frame's version
                         must be the state's), merged, never replaced
    T seq:u64 count:u32 (ms:u64 counter:u32 flags:u8 node-len:u16 node [expires:u64]
                         key-len:u32 key value-len:u32 value)*
                         the writes of one transaction (see
                         :mod:`distkv.front.transactions`), applied in one
                         call and acknowledged as ``seq``, their last
    A seq:u64            applied everything up to seq
    H [floor low]        heartbeat, with two versions (ms:u64 counter:u32
                         node-len:u16 node, each): every entry the sender
                         holds below ``floor`` the receiver holds too, and
                         the sender has received every write below ``low``
                         from every node (see :mod:`distkv.cluster.stability`)
    h now:u64            the heartbeat's answer: the answering node's wall
                         clock (ms), which tells the asking node how far its
                         own clock is ahead at least (see :mod:`distkv.cluster.skew`)

Anti-entropy rounds ride on the same connection. The pushing side sends its
digest; the other side answers with the keys and versions of every bucket
that differs; the pushing side sends (as ``W`` frames with sequence number 0,
which need no acknowledgement) each entry it holds newer, then ends the round;
the other side confirms once it has applied all of them::

    D round:u32 digest            (pushing side)
    K round:u32 bucket:u32 count:u32 (key-len:u32 key ms:u64 counter:u32 node-len:u16 node)*
    E round:u32 horizon           (other side: no more key lists; its stable
                                   horizon, below which a key it lacks is dead)
    S round:u32 flags:u8 clock [count:u16 (node-len:u16 node)*]
                                  (pushing side: every newer entry sent; flag 1:
                                   it serves, not loading; its clock, which the
                                   other side observes before it serves; flag 2:
                                   the node ids it knows as members follow, which
                                   it cannot tell while a peer address of its own
                                   never answered)
    s round:u32                   (other side: all applied)

Either end sends its member list (see :mod:`distkv.cluster.membership`) once
the handshake is done and again whenever it changes::

    M count:u16 (node-len:u16 node state:u8 version address-version
                 host-len:u16 host port:u16)*
                                  (state 0 member, 1 replaced, 2 removed; at
                                   most MAX_MEMBERS entries; an empty host: the
                                   node does not know its address; port 0: nor
                                   its port)

Either end sends its flush floor (see :meth:`distkv.store.store.Store.raise_floor`)
once the handshake is done, when it rises, and before its side of each
anti-entropy round (before ``D``, and before the first ``K`` of an answer),
so a node learns a flush before anything the flush removed could travel::

    F ms:u64 counter:u32 node-len:u16 node
                                  (every entry below this version is flushed;
                                   the node id is a real one, never empty)

A quorum read (see :mod:`distkv.cluster.quorum`) asks a peer for its entries of
some keys, and the peer answers once what it answered with is committed (a
request with no keys is a barrier: its answer says every frame sent before it
was applied, a flush among them)::

    R id:u64 count:u32 (key-len:u32 key)*
                                  (at most MAX_READ_KEYS keys; the frame limit
                                   bounds their bytes)
    r id:u64 flags:u8 count:u32 (ms:u64 counter:u32 flags:u8 node-len:u16 node
                        [expires:u64] key-len:u32 key value-len:u32 value)*
                                  (the entries it holds of those keys, tombstones
                                   included, each encoded as in a ``T`` frame;
                                   a key it lacks is left out; an answer larger
                                   than a frame goes in several, all but the
                                   last with flag 1, "more"; flag 2: the node
                                   is loading, holds nothing it can vouch
                                   for, and sends no entries)

LINEARIZABLE's per-key consensus (see :mod:`distkv.cluster.consensus`) has
frames of its own, ``P``, ``p``, ``V`` and ``v``: see :mod:`distkv.cluster.paxoswire`.

Runs of ``W`` frames travel joined in ``B`` frames, read in one pass: see
:mod:`distkv.cluster.batchwire`.

Protocol version 4 added ``R`` and ``r``, version 5 ``P``, ``p``, ``V`` and
``v``, version 6 ``B``; nodes of other versions refuse to link (the handshake names both
versions).

Replicated writes travel only as ``W`` and ``T`` frames, never as client commands, so a
receiving node can never mistake one for a local write and broadcast it again.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from distkv.cluster import membership
from distkv.cluster.membership import Member
from distkv.store import counter as counters
from distkv.store.digest import BUCKETS, DIGEST_BYTES
from distkv.store.entries import (
    EXPIRING_FIELDS,
    Entry,
    counter_entry,
    counter_state,
    expires_of,
    expiring_entry,
    is_counter,
)
from distkv.store.hlc import Version

#: 4: counters (the W/T flag 4), and quorum reads (the R and r frames);
#: 5: a counter slot's total may be a fraction (INCRBYFLOAT's; its size
#: negated), LINEARIZABLE's consensus (the P, p, V and v frames), and flush
#: floors on a millisecond's edge (the empty node id); 6: batches of writes
#: (the B frame, see :mod:`distkv.cluster.batchwire`). Nodes of other versions
#: refuse each other at the handshake, saying why, rather than drop frames
#: they cannot read.
PROTOCOL_VERSION = 6
MAGIC = b"DISTKV-PEER "
OK_WORD = b"DISTKV-PEER-OK"
ERR_WORD = b"DISTKV-PEER-ERR"
CHALLENGE_WORD = b"DISTKV-PEER-CHALLENGE"
PROOF_WORD = b"DISTKV-PEER-PROOF"

NODE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_INCARNATION = re.compile(r"^[0-9a-f]{1,32}$")
#: A nonce or a proof: 32 bytes, as 64 hex digits.
_HEX32 = re.compile(rb"^[0-9a-f]{64}$")

_LENGTH = struct.Struct(">I")
_WRITE = struct.Struct(">QQIBH")
#: A whole W frame's head: length, kind, then _WRITE's fields.
_WRITE_FRAME = struct.Struct(">IcQQIBH")
#: The bytes of a W frame body besides the node id, key and value.
_WRITE_FIXED = 1 + _WRITE.size + 4
_node_ascii: Dict[str, bytes] = {}
_new_tuple = tuple.__new__
_KEYLEN = struct.Struct(">I")
_SEQ = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_KEYLIST = struct.Struct(">III")
_KEYVERSION = struct.Struct(">QIH")
_TOMBSTONE = 1
#: A write's flag: an expiry (ms since the epoch, u64) follows its node id.
_EXPIRES = 2
#: A write's flag: a counter key; its value is the encoded counter state.
_COUNTER = 4
_WRITE_FLAGS = (0, _TOMBSTONE, _EXPIRES, _COUNTER)
#: The largest sequence number (and clock reading) a frame may carry: what
#: SQLite's integers, which keep them, can hold.
MAX_SEQ = (1 << 63) - 1
#: The flags of an ``S`` mark: its sender is serving, not loading; its
#: members follow.
_SERVING = 1
_MEMBERS = 2
#: The most members an ``S`` mark may name.
MAX_MEMBERS = 1024
_U16 = struct.Struct(">H")

_HEARTBEAT_REPLY = struct.Struct(">IcQ")

#: Key bytes a key-list frame is filled to before the next key starts another
#: (a single key larger than this travels alone).
KEY_LIST_BYTES = 256 * 1024

#: The most a frame body adds to the request bytes it carries: a write's head
#: (kind, seq, ms, counter, flags, node-id length, key length) and the longest
#: node id, or a key list's head and one entry's version; rounded up.
FRAME_SLACK = 128


def max_frame(max_request: int) -> int:
    """The largest frame body a node with this ``--max-request`` can emit.

    A write carries one key and value, and no request over ``max_request``
    bytes is ever stored (a counter's write, its slots besides: at most
    :data:`~distkv.store.counter.STATE_BYTES`); a key list holds up to :data:`KEY_LIST_BYTES` of
    keys, or one key; a digest offer has a fixed size. Peers with the same
    options therefore accept every frame a node sends.
    """
    return max(max_request + counters.STATE_BYTES, KEY_LIST_BYTES, 5 + DIGEST_BYTES) + FRAME_SLACK


class WireError(Exception):
    """A peer sent something that breaks the protocol; drop the connection."""


class Hello(NamedTuple):
    """Who is on the other end of a peer connection."""

    node: str
    incarnation: str


class Greeting(NamedTuple):
    """The connecting side's handshake: who calls, and the port where peers
    reach it (the one it listens on, or the port it advertises)."""

    hello: Hello
    port: Optional[int]
    #: The caller's nonce, when it has a cluster secret.
    nonce: Optional[bytes] = None


class Accept(NamedTuple):
    """The accepting side's answer: who answers, the highest sequence number
    of the caller's own writes it has applied, and whether it serves."""

    hello: Hello
    seen: int
    serving: bool
    #: The accepting side's proof of the cluster secret, when it has one.
    proof: Optional[bytes] = None


class Write(NamedTuple):
    seq: int
    key: bytes
    entry: Entry


class Transaction(NamedTuple):
    """The writes of one transaction: ``(key, entry)`` each, and the local
    sequence number of its last write, which acknowledges them all."""

    seq: int
    writes: Tuple[Tuple[bytes, Entry], ...]


class Ack(NamedTuple):
    seq: int


class Heartbeat(NamedTuple):
    reply: bool
    floor: Optional[Version] = None
    low: Optional[Version] = None
    #: An answer's wall clock reading, in milliseconds.
    now: Optional[int] = None


class DigestOffer(NamedTuple):
    round: int
    digest: bytes


class KeyList(NamedTuple):
    round: int
    bucket: int
    versions: List[Tuple[bytes, Version]]


class RoundMark(NamedTuple):
    """``E``, ``S`` or ``s``: a step of an anti-entropy round; ``E`` carries the
    sender's stable horizon, ``S`` the sender's clock, whether it serves and
    the members it knows (None: it cannot tell)."""

    kind: bytes
    round: int
    horizon: Optional[Version] = None
    serving: bool = False
    members: Optional[Tuple[str, ...]] = None


class Flush(NamedTuple):
    """``F``: the sender's flush floor."""

    floor: Version


class Members(NamedTuple):
    """``M``: the sender's member list."""

    entries: Tuple[Member, ...]


class ReadRequest(NamedTuple):
    """``R``: a quorum read's request for the entries of ``keys`` (none: a barrier)."""

    id: int
    keys: Tuple[bytes, ...]


class ReadReply(NamedTuple):
    """``r``: the entries the answering node holds of the keys asked for
    (``more``: further ``r`` frames of this answer follow)."""

    id: int
    entries: Tuple[Tuple[bytes, Entry], ...]
    more: bool = False
    #: The answering node is loading: its answer does not count.
    loading: bool = False


Frame = Union[Write, Transaction, Ack, Heartbeat, DigestOffer, KeyList, RoundMark, Members,
              Flush, ReadRequest, ReadReply, "paxoswire.Prepare", "paxoswire.Promise",
              "paxoswire.Accept", "paxoswire.Accepted", "batchwire.Batch"]

#: The most keys one ``R`` frame may ask for (MGET of more keys is asked in
#: several frames).
MAX_READ_KEYS = 65536


def valid_node_id(node: str) -> bool:
    return NODE_ID.match(node) is not None


def _hex(raw: Optional[bytes]) -> bytes:
    return b"-" if raw is None else raw.hex().encode("ascii")


def greeting_line(greeting: Greeting) -> bytes:
    hello, port, nonce = greeting
    return b"%s %d %s %s %s %s\r\n" % (
        MAGIC.strip(),
        PROTOCOL_VERSION,
        hello.node.encode("ascii"),
        hello.incarnation.encode("ascii"),
        b"-" if port is None else b"%d" % (port,),
        _hex(nonce),
    )


def accept_line(accept: Accept) -> bytes:
    hello, seen, serving, proof = accept
    return b"%s %d %s %s %d %s %s\r\n" % (
        OK_WORD,
        PROTOCOL_VERSION,
        hello.node.encode("ascii"),
        hello.incarnation.encode("ascii"),
        seen,
        b"serving" if serving else b"loading",
        _hex(proof),
    )


def challenge_line(node: str, nonce: bytes) -> bytes:
    return b"%s %d %s %s\r\n" % (CHALLENGE_WORD, PROTOCOL_VERSION, node.encode("ascii"), _hex(nonce))


def proof_line(proof: bytes) -> bytes:
    return b"%s %s\r\n" % (PROOF_WORD, _hex(proof))


#: How a refusal's proof of the cluster secret ends its message.
_REFUSAL_PROOF = re.compile(rb" proof=([0-9a-f]{64})$")


def refusal_line(code: str, message: str, proof: Optional[bytes] = None) -> bytes:
    text = message.encode("utf-8")
    if proof is not None:
        text += b" proof=" + proof.hex().encode("ascii")
    return b"%s %s %s\r\n" % (ERR_WORD, code.encode("ascii"), text)


def refusal_proof(message: str) -> Tuple[str, Optional[bytes]]:
    """A refusal's message without its proof, and the proof (None: none)."""
    found = _REFUSAL_PROOF.search(message.encode("utf-8", "replace"))
    if found is None:
        return message, None
    return message[: found.start()], bytes.fromhex(found.group(1).decode("ascii"))


def _parse_line(line: bytes, word: bytes, extra: int) -> Tuple[Hello, List[bytes]]:
    """A handshake line that must start with ``word``: its Hello and the
    ``extra`` fields after it."""
    parts = line.strip().split()
    if len(parts) < 2 or parts[0] != word.strip():
        raise WireError(f"malformed handshake {line[:200]!r}")
    if parts[1] != b"%d" % (PROTOCOL_VERSION,):
        raise WireError(
            f"unsupported peer protocol version {parts[1][:20]!r} (this node speaks "
            f"{PROTOCOL_VERSION}: run the same DistKV release on every node)"
        )
    if len(parts) != 4 + extra:
        raise WireError(f"malformed handshake {line[:200]!r}")
    node = parts[2].decode("ascii", "replace")
    incarnation = parts[3].decode("ascii", "replace")
    if not valid_node_id(node) or not _INCARNATION.match(incarnation):
        raise WireError("malformed node id or incarnation in handshake")
    return Hello(node, incarnation), parts[4:]


def _number(raw: bytes, limit: int, what: str) -> int:
    if not raw.isdigit() or len(raw) > 20 or int(raw) > limit:
        raise WireError(f"malformed {what} in handshake")
    return int(raw)


def _hex32(raw: bytes, what: str, optional: bool = True) -> Optional[bytes]:
    if optional and raw == b"-":
        return None
    if _HEX32.match(raw) is None:
        raise WireError(f"malformed {what} in handshake")
    return bytes.fromhex(raw.decode("ascii"))


def parse_greeting(line: bytes) -> Greeting:
    """Parse the connecting side's handshake line."""
    hello, (port, nonce) = _parse_line(line, MAGIC, 2)
    return Greeting(hello, None if port == b"-" else _number(port, 65535, "port"),
                    _hex32(nonce, "nonce"))


def parse_reply(line: bytes) -> Union[Accept, Tuple[str, str]]:
    """Parse the accepting side's answer: an Accept, or a (code, message) refusal."""
    if line.startswith(ERR_WORD + b" "):
        _, code, message = (line.strip().split(None, 2) + [b"", b""])[:3]
        return code.decode("ascii", "replace"), message.decode("utf-8", "replace")
    hello, (seen, state, proof) = _parse_line(line, OK_WORD, 3)
    if state not in (b"serving", b"loading"):
        raise WireError("malformed state in handshake")
    return Accept(hello, _number(seen, MAX_SEQ, "sequence number"), state == b"serving",
                  _hex32(proof, "proof"))


def is_challenge(line: bytes) -> bool:
    return line.startswith(CHALLENGE_WORD + b" ")


def parse_challenge(line: bytes) -> Tuple[str, bytes]:
    """The accepting side's challenge: its node id and nonce."""
    parts = line.strip().split()
    if len(parts) != 4 or parts[0] != CHALLENGE_WORD:
        raise WireError(f"malformed challenge {line[:200]!r}")
    if parts[1] != b"%d" % (PROTOCOL_VERSION,):
        raise WireError(f"unsupported peer protocol version {parts[1][:20]!r} in challenge")
    node = parts[2].decode("ascii", "replace")
    if not valid_node_id(node):
        raise WireError("malformed node id in challenge")
    nonce = _hex32(parts[3], "nonce", optional=False)
    assert nonce is not None
    return node, nonce


def parse_proof(line: bytes) -> bytes:
    """The connecting side's proof."""
    parts = line.strip().split()
    if len(parts) != 2 or parts[0] != PROOF_WORD:
        raise WireError(f"malformed proof line {line[:200]!r}")
    proof = _hex32(parts[1], "proof", optional=False)
    assert proof is not None
    return proof


def encode_write(seq: int, key: bytes, entry: Entry) -> bytes:
    if len(entry) != 4:
        if is_counter(entry):
            return _encode_counter_write(seq, key, entry)
        return _encode_expiring_write(seq, key, entry)
    value, ms, counter, name = entry  # type: ignore[misc]
    node = _node_ascii.get(name)
    if node is None:
        node = _node_ascii[name] = name.encode("ascii")
    if value is None:
        flags, value = _TOMBSTONE, b""
    else:
        flags = 0
    head = _WRITE_FRAME.pack(
        _WRITE_FIXED + len(node) + len(key) + len(value),
        b"W", seq, ms, counter, flags, len(node),
    )
    return b"".join((head, node, _KEYLEN.pack(len(key)), key, value))


def _encode_expiring_write(seq: int, key: bytes, entry: Entry) -> bytes:
    value, ms, counter, name = entry[0], entry[-3], entry[-2], entry[-1]
    expires = expires_of(entry)
    assert value is not None
    node = name.encode("ascii")
    head = _WRITE_FRAME.pack(
        _WRITE_FIXED + len(node) + _SEQ.size + len(key) + len(value),
        b"W", seq, ms, counter, _EXPIRES, len(node),
    )
    return b"".join((head, node, _SEQ.pack(expires), _KEYLEN.pack(len(key)), key, value))


def _encode_counter_write(seq: int, key: bytes, entry: Entry) -> bytes:
    state = counters.encode(counter_state(entry))
    node = entry[-1].encode("ascii")  # type: ignore[union-attr]
    head = _WRITE_FRAME.pack(
        _WRITE_FIXED + len(node) + len(key) + len(state),
        b"W", seq, entry[-3], entry[-2], _COUNTER, len(node),
    )
    return b"".join((head, node, _KEYLEN.pack(len(key)), key, state))


def _counter(raw: bytes, ms: int, counter: int, node: str) -> Entry:
    """The counter entry whose encoded state is ``raw``, written at (ms, counter, node)."""
    try:
        state = counters.decode(raw, valid_node_id)
    except counters.CounterError as e:
        raise WireError(str(e)) from e
    if counters.version(state) != (ms, counter, node):
        raise WireError("a counter's version is not its state's")
    return counter_entry(state)


def value_bytes(entry: Entry) -> int:
    """The bytes ``entry``'s value takes in a write frame."""
    if is_counter(entry):
        return len(counters.encode(counter_state(entry)))
    return len(entry[0] or b"")


#: A transaction frame's head after its kind (seq, count), and each write's
#: head (ms, counter, flags, node-id length).
_TRANSACTION = struct.Struct(">QI")
_TRANSACTION_WRITE = struct.Struct(">QIBH")
#: The bytes a transaction frame's write takes besides its node id, key and value.
TRANSACTION_WRITE_FIXED = _TRANSACTION_WRITE.size + 4 + 4
#: The bytes of a transaction frame's body besides its writes.
TRANSACTION_FIXED = 1 + _TRANSACTION.size


def transaction_size(writes: Sequence[Tuple[bytes, Entry]]) -> int:
    """The body size of the transaction frame that carries ``writes``."""
    return TRANSACTION_FIXED + sum([
        TRANSACTION_WRITE_FIXED + len(entry[-1]) + len(key) + value_bytes(entry)  # type: ignore[arg-type]
        + (_SEQ.size if len(entry) == EXPIRING_FIELDS else 0)
        for key, entry in writes
    ])


def encode_transaction(seq: int, writes: Sequence[Tuple[bytes, Entry]]) -> bytes:
    """One ``T`` frame carrying ``writes``, acknowledged as ``seq``."""
    parts = [b"T", _TRANSACTION.pack(seq, len(writes))]
    _encode_entries(writes, parts)
    return _frame(b"".join(parts))


def _encode_entries(writes: Sequence[Tuple[bytes, Entry]], parts: List[bytes]) -> None:
    """Append ``writes`` as a ``T`` frame lays them out (an ``r`` frame too)."""
    for key, entry in writes:
        value, ms, counter, name = entry[0], entry[-3], entry[-2], entry[-1]
        node = name.encode("ascii")  # type: ignore[union-attr]
        if is_counter(entry):
            flags = _COUNTER
            value = counters.encode(counter_state(entry))
        elif len(entry) == EXPIRING_FIELDS:
            flags = _EXPIRES
        else:
            flags = _TOMBSTONE if value is None else 0
        parts.append(_TRANSACTION_WRITE.pack(ms, counter, flags, len(node)))
        parts.append(node)
        if flags == _EXPIRES:
            parts.append(_SEQ.pack(expires_of(entry)))
        parts.append(_KEYLEN.pack(len(key)))
        parts.append(key)
        parts.append(_KEYLEN.pack(0 if value is None else len(value)))
        if value:
            parts.append(value)


def encode_read_request(id_: int, keys: Sequence[bytes]) -> bytes:
    """The ``R`` frame asking for the entries of ``keys`` (at most MAX_READ_KEYS)."""
    if len(keys) == 1:  # the usual read: one key
        key = keys[0]
        return _frame(b"R%s%s%s" % (_TRANSACTION.pack(id_, 1), _KEYLEN.pack(len(key)), key))
    parts = [b"R", _TRANSACTION.pack(id_, len(keys))]
    for key in keys:
        parts.append(_KEYLEN.pack(len(key)))
        parts.append(key)
    return _frame(b"".join(parts))


_READ_REPLY = struct.Struct(">QBI")


def encode_read_reply(id_: int, entries: Sequence[Tuple[bytes, Entry]],
                      max_body: int) -> Iterator[bytes]:
    """The ``r`` frames answering read ``id_`` with ``entries``, none of whose
    bodies is over ``max_body`` (a frame limit no smaller than one entry's)."""
    fixed = 1 + _READ_REPLY.size
    if not entries or (len(entries) == 1 and fixed + transaction_size(entries) <= max_body):
        yield _read_reply_frame(id_, entries, False)  # the usual answer: one frame
        return
    chunk: List[Tuple[bytes, Entry]] = []
    size = fixed
    for key, entry in entries:
        grown = size + transaction_size([(key, entry)]) - TRANSACTION_FIXED
        if chunk and grown > max_body:
            yield _read_reply_frame(id_, chunk, True)
            chunk, grown = [], fixed + transaction_size([(key, entry)]) - TRANSACTION_FIXED
        chunk.append((key, entry))
        size = grown
    yield _read_reply_frame(id_, chunk, False)


def encode_read_refusal(id_: int) -> bytes:
    """The ``r`` frame of a loading node: it cannot vouch for what it holds."""
    return _frame(b"r" + _READ_REPLY.pack(id_, _LOADING, 0))


_MORE = 1
_LOADING = 2


def _read_reply_frame(id_: int, entries: Sequence[Tuple[bytes, Entry]], more: bool) -> bytes:
    parts = [b"r", _READ_REPLY.pack(id_, _MORE if more else 0, len(entries))]
    _encode_entries(entries, parts)
    return _frame(b"".join(parts))


def _decode_read_request(body: bytes) -> ReadRequest:
    id_, count = _TRANSACTION.unpack_from(body, 1)
    if count == 1:  # the usual read: one key, and nothing after it
        (key_len,) = _KEYLEN.unpack_from(body, TRANSACTION_FIXED)
        if TRANSACTION_FIXED + _KEYLEN.size + key_len != len(body):
            raise WireError("malformed read request")
        return _new_tuple(ReadRequest, (id_, (body[TRANSACTION_FIXED + _KEYLEN.size:],)))
    # Every key takes its length at least; the count is bounded before any work.
    if count > MAX_READ_KEYS or count > (len(body) - TRANSACTION_FIXED) // _KEYLEN.size:
        raise WireError("malformed key count in read request")
    offset = TRANSACTION_FIXED
    keys = []
    for _ in range(count):
        (key_len,) = _KEYLEN.unpack_from(body, offset)
        offset += _KEYLEN.size
        key = body[offset : offset + key_len]
        if len(key) != key_len:
            raise WireError("truncated key in read request")
        offset += key_len
        keys.append(key)
    if offset != len(body):
        raise WireError("trailing bytes in read request")
    return ReadRequest(id_, tuple(keys))


def _decode_read_reply(body: bytes) -> ReadReply:
    id_, flags, count = _READ_REPLY.unpack_from(body, 1)
    fixed = 1 + _READ_REPLY.size
    if flags not in (0, _MORE, _LOADING) or (flags == _LOADING and count):
        raise WireError("malformed flags in read reply")
    if count > (len(body) - fixed) // (TRANSACTION_WRITE_FIXED + 1):
        raise WireError("malformed entry count in read reply")
    return ReadReply(id_, _decode_entries(body, fixed, count, "read reply"),
                     flags == _MORE, flags == _LOADING)


def _decode_transaction(body: bytes) -> Transaction:
    seq, count = _TRANSACTION.unpack_from(body, 1)
    if not 0 < seq <= MAX_SEQ:
        raise WireError("sequence number out of range in transaction frame")
    # Every write takes at least its fixed bytes and a node id (its key may be empty).
    if not 0 < count <= (len(body) - TRANSACTION_FIXED) // (TRANSACTION_WRITE_FIXED + 1):
        raise WireError("malformed write count in transaction frame")
    return Transaction(seq, _decode_entries(body, TRANSACTION_FIXED, count, "transaction frame"))


def _decode_entries(body: bytes, offset: int, count: int,
                    what: str) -> Tuple[Tuple[bytes, Entry], ...]:
    """``count`` entries laid out as in a ``T`` frame, from ``offset`` to the end."""
    writes = []
    for _ in range(count):
        ms, counter, flags, node_len = _TRANSACTION_WRITE.unpack_from(body, offset)
        offset += _TRANSACTION_WRITE.size
        if ms > MAX_SEQ or flags not in _WRITE_FLAGS:
            raise WireError(f"clock or flags out of range in {what}")
        raw = body[offset : offset + node_len]
        if len(raw) != node_len:
            raise WireError(f"truncated node id in {what}")
        node = _node(raw)
        offset += node_len
        expires = 0
        if flags == _EXPIRES:
            (expires,) = _SEQ.unpack_from(body, offset)
            offset += _SEQ.size
            if not 0 < expires <= MAX_SEQ:
                raise WireError(f"expiry out of range in {what}")
        (key_len,) = _KEYLEN.unpack_from(body, offset)
        offset += _KEYLEN.size
        key = body[offset : offset + key_len]
        if len(key) != key_len:
            raise WireError(f"truncated key in {what}")
        offset += key_len
        (value_len,) = _KEYLEN.unpack_from(body, offset)
        offset += _KEYLEN.size
        value: Optional[bytes] = body[offset : offset + value_len]
        tombstone = flags == _TOMBSTONE
        if len(value) != value_len or (tombstone and value_len):  # type: ignore[arg-type]
            raise WireError(f"malformed value in {what}")
        offset += value_len
        if flags == _COUNTER:
            writes.append((key, _counter(value, ms, counter, node)))  # type: ignore[arg-type]
            continue
        writes.append((key, expiring_entry(None if tombstone else value, expires, ms, counter, node)))
    if offset != len(body):
        raise WireError(f"trailing bytes in {what}")
    return tuple(writes)


def _version(version: Version) -> bytes:
    node = version.node.encode("ascii")
    return _KEYVERSION.pack(version.ms, version.counter, len(node)) + node


#: Node ids already read off the wire and found well formed, by their bytes:
#: every write frame names one, and a cluster has few. Bounded (emptied when
#: full), so a peer naming ever new ids cannot grow it.
_valid_nodes: Dict[bytes, str] = {}
_VALID_NODES_MAX = 4096


def _node(raw: bytes, bound: bool = False) -> str:
    """A node id read off the wire; a bound (a floor, low, horizon or clock
    reading) may also carry the empty id of the versions below or above all."""
    known = _valid_nodes.get(raw)
    if known is not None:
        return known
    node = raw.decode("ascii")
    if NODE_ID.match(node) is None:
        if not (bound and not node):
            raise WireError(f"malformed node id {raw[:80]!r}")
        return node
    if len(_valid_nodes) >= _VALID_NODES_MAX:
        _valid_nodes.clear()
    _valid_nodes[raw] = node
    return node


def _read_version(body: bytes, offset: int) -> Tuple[Version, int]:
    ms, counter, node_len = _KEYVERSION.unpack_from(body, offset)
    offset += _KEYVERSION.size
    raw = body[offset : offset + node_len]
    if len(raw) != node_len:
        raise WireError("truncated version")
    return Version(ms, counter, _node(raw, bound=True)), offset + node_len


def encode_heartbeat(floor: Version, low: Version) -> bytes:
    return _frame(b"H" + _version(floor) + _version(low))


def encode_ack(seq: int) -> bytes:
    return _LENGTH.pack(9) + b"A" + _SEQ.pack(seq)


def encode_digest(round_: int, digest: bytes) -> bytes:
    return _frame(b"D" + _U32.pack(round_) + digest)


def encode_key_list(round_: int, bucket: int, versions: Sequence[Tuple[bytes, Version]]) -> bytes:
    parts = [b"K", _KEYLIST.pack(round_, bucket, len(versions))]
    for key, version in versions:
        node = version.node.encode("ascii")
        parts.append(_KEYLEN.pack(len(key)))
        parts.append(key)
        parts.append(_KEYVERSION.pack(version.ms, version.counter, len(node)))
        parts.append(node)
    return _frame(b"".join(parts))


def encode_heartbeat_reply(now_ms: int) -> bytes:
    return _HEARTBEAT_REPLY.pack(9, b"h", now_ms)


def encode_bare_heartbeat() -> bytes:
    """A heartbeat with no floor: sent by an end that pushes nothing."""
    return _frame(b"H")


def encode_mark(kind: bytes, round_: int, horizon: Optional[Version] = None) -> bytes:
    tail = b"" if horizon is None else _version(horizon)
    return _frame(kind + _U32.pack(round_) + tail)


def encode_round_end(round_: int, clock: Version, serving: bool,
                     members: Optional[Sequence[str]] = None) -> bytes:
    """The pushing side's ``S`` mark."""
    flags = (_SERVING if serving else 0) | (0 if members is None else _MEMBERS)
    parts = [b"S", _U32.pack(round_), bytes([flags]), _version(clock)]
    if members is not None:
        parts.append(_U16.pack(len(members)))
        for node in members:
            raw = node.encode("ascii")
            parts.append(_U16.pack(len(raw)))
            parts.append(raw)
    return _frame(b"".join(parts))


def _decode_round_end(body: bytes) -> RoundMark:
    flags = body[5]
    if flags & ~(_SERVING | _MEMBERS):
        raise WireError("malformed round mark")
    clock, offset = _read_version(body, 6)
    members: Optional[Tuple[str, ...]] = None
    if flags & _MEMBERS:
        (count,) = _U16.unpack_from(body, offset)
        offset += _U16.size
        if count > MAX_MEMBERS:
            raise WireError(f"round mark names {count} members")
        names = []
        for _ in range(count):
            (length,) = _U16.unpack_from(body, offset)
            offset += _U16.size
            raw = body[offset : offset + length]
            if len(raw) != length:
                raise WireError("truncated member in round mark")
            names.append(_node(raw))
            offset += length
        members = tuple(names)
    if offset != len(body):
        raise WireError("malformed round mark")
    return RoundMark(b"S", _U32.unpack_from(body, 1)[0], clock, bool(flags & _SERVING), members)


def encode_flush(floor: Version) -> bytes:
    """The ``F`` frame carrying the flush floor ``floor`` (a millisecond's
    start: the empty node id, see :meth:`distkv.store.store.Store.flush`)."""
    return _frame(b"F" + _version(floor))


def _decode_flush(body: bytes) -> Flush:
    ms, counter, node_len = _KEYVERSION.unpack_from(body, 1)
    offset = 1 + _KEYVERSION.size
    raw = body[offset:]
    if len(raw) != node_len:
        raise WireError("malformed flush frame")
    if ms > MAX_SEQ:
        raise WireError("clock out of range in flush frame")
    return Flush(Version(ms, counter, _node(raw, bound=True)))


def encode_members(entries: Sequence[Member]) -> bytes:
    """The ``M`` frame carrying ``entries``."""
    parts = [b"M", _U16.pack(len(entries))]
    for m in entries:
        node = m.node.encode("ascii")
        host = m.host.encode("ascii")
        parts += [_U16.pack(len(node)), node, bytes([membership.STATES.index(m.state)]),
                  _version(m.version), _version(m.address_version),
                  _U16.pack(len(host)), host, _U16.pack(m.port)]
    return _frame(b"".join(parts))


def _decode_members(body: bytes) -> Members:
    (count,) = _U16.unpack_from(body, 1)
    if count > membership.MAX_MEMBERS:
        raise WireError(f"member list of {count} entries")
    offset = 1 + _U16.size
    entries = []
    for _ in range(count):
        (length,) = _U16.unpack_from(body, offset)
        offset += _U16.size
        raw = body[offset : offset + length]
        if len(raw) != length:
            raise WireError("truncated member list")
        node = _node(raw)
        offset += length
        state = body[offset]
        if state >= len(membership.STATES):
            raise WireError("malformed member state")
        version, offset = _read_version(body, offset + 1)
        address_version, offset = _read_version(body, offset)
        (length,) = _U16.unpack_from(body, offset)
        offset += _U16.size
        raw = body[offset : offset + length]
        host = raw.decode("ascii")
        if len(raw) != length or not membership.HOST.match(host):
            raise WireError("malformed member address")
        offset += length
        (port,) = _U16.unpack_from(body, offset)
        offset += _U16.size
        if host and not port:
            raise WireError("malformed member address")
        entries.append(Member(node, membership.STATES[state], version, host, port,
                              address_version))
    if offset != len(body):
        raise WireError("malformed member list")
    return Members(tuple(entries))


def _frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


def _decode_key_list(body: bytes) -> KeyList:
    round_, bucket, count = _KEYLIST.unpack_from(body, 1)
    if bucket >= BUCKETS:
        raise WireError(f"no digest bucket {bucket}")
    offset = 1 + _KEYLIST.size
    versions = []
    for _ in range(count):
        (key_len,) = _KEYLEN.unpack_from(body, offset)
        offset += _KEYLEN.size
        key = body[offset : offset + key_len]
        offset += key_len
        if len(key) != key_len:
            raise WireError("malformed key in key list frame")
        ms, counter, node_len = _KEYVERSION.unpack_from(body, offset)
        offset += _KEYVERSION.size
        raw = body[offset : offset + node_len]
        if len(raw) != node_len:
            raise WireError("truncated version in key list frame")
        offset += node_len
        versions.append((key, Version(ms, counter, _node(raw))))
    if offset != len(body):
        raise WireError("malformed key list frame")
    return KeyList(round_, bucket, versions)


def decode_body(body: bytes) -> Frame:
    kind = body[:1]
    try:
        if kind == b"W":
            seq, ms, counter, flags, node_len = _WRITE.unpack_from(body, 1)
            if seq > MAX_SEQ or ms > MAX_SEQ:
                raise WireError("sequence number or clock out of range in write frame")
            offset = 1 + _WRITE.size
            node = _node(body[offset : offset + node_len])
            offset += node_len
            expires = 0
            if flags == _EXPIRES:
                (expires,) = _SEQ.unpack_from(body, offset)
                offset += _SEQ.size
                if not 0 < expires <= MAX_SEQ:
                    raise WireError("expiry out of range in write frame")
            (key_len,) = _KEYLEN.unpack_from(body, offset)
            offset += _KEYLEN.size
            key = body[offset : offset + key_len]
            if len(key) != key_len:
                raise WireError("truncated key in write frame")
            offset += key_len
            tombstone = flags == _TOMBSTONE
            if flags not in _WRITE_FLAGS or (tombstone and offset != len(body)):
                raise WireError("malformed flags in write frame")
            if flags == _COUNTER:
                return Write(seq, key, _counter(body[offset:], ms, counter, node))
            value: Optional[bytes] = None if tombstone else body[offset:]
            # The hot path of every replicated write: built without
            # NamedTuple.__new__ (a Python call), and without one for a
            # plain entry, the common case.
            if expires:
                return _new_tuple(Write, (seq, key, expiring_entry(value, expires, ms, counter, node)))
            return _new_tuple(Write, (seq, key, (value, ms, counter, node)))
        if kind == b"B":
            return batchwire.decode(body)
        if kind == b"R":
            return _decode_read_request(body)
        if kind == b"r":
            return _decode_read_reply(body)
        if kind == b"T":
            return _decode_transaction(body)
        if kind == b"A" and len(body) == 9:
            (seq,) = _SEQ.unpack_from(body, 1)
            if seq > MAX_SEQ:
                raise WireError("sequence number out of range in ack frame")
            return Ack(seq)
        if kind == b"H" and len(body) == 1:
            return Heartbeat(False)
        if kind == b"h" and len(body) == 9:
            return Heartbeat(True, now=_SEQ.unpack_from(body, 1)[0])
        if kind == b"H":
            floor, offset = _read_version(body, 1)
            low, offset = _read_version(body, offset)
            if offset != len(body):
                raise WireError("malformed heartbeat frame")
            return Heartbeat(False, floor, low)
        if kind == b"D" and len(body) == 5 + DIGEST_BYTES:
            return DigestOffer(_U32.unpack_from(body, 1)[0], body[5:])
        if kind == b"K":
            return _decode_key_list(body)
        if kind in (b"E", b"s") and len(body) == 5:
            return RoundMark(kind, _U32.unpack_from(body, 1)[0])
        if kind == b"E":
            version, offset = _read_version(body, 5)
            if offset != len(body):
                raise WireError("malformed round mark")
            return RoundMark(kind, _U32.unpack_from(body, 1)[0], version)
        if kind == b"S" and len(body) > 6:
            return _decode_round_end(body)
        if kind == b"M":
            return _decode_members(body)
        if kind == b"F":
            return _decode_flush(body)
        if kind in paxoswire.KINDS:
            return paxoswire.decode(body)
    except (struct.error, UnicodeDecodeError, IndexError) as e:
        raise WireError(f"malformed frame: {e}") from e
    raise WireError(f"unknown frame kind {kind!r}")


def iter_writes(buffer: bytes) -> Iterator[Tuple[int, bytes, Entry]]:
    """``(seq, key, entry)`` of each ``W`` frame in ``buffer``, which holds
    nothing else (see :func:`decode_writes`)."""
    return zip(*decode_writes(buffer))


#: A ``W`` frame's length, kind, sequence number and version's ms and
#: counter; then its flags, node id length and node id of the given length as
#: one bytes object; then its key length (see :func:`decode_writes`).
_same_node_heads: Dict[int, struct.Struct] = {}


def decode_writes(buffer: bytes) -> Tuple[List[int], List[bytes], List[Entry]]:
    """The sequence numbers, keys and entries of the ``W`` frames in
    ``buffer``, which holds nothing else: the bulk path for reading a data dir
    back (see :mod:`distkv.disk.datafile`), with each node id decoded once.
    A plain value written by the node of the frame before it (nearly every
    frame of a data dir) costs one ``struct`` call, for its head, node id and
    key length together; any other frame is read field by field."""
    seqs: List[int] = []
    keys: List[bytes] = []
    entries: List[Entry] = []
    add_seq, add_key, add_entry = seqs.append, keys.append, entries.append
    head = _WRITE_FRAME.unpack_from
    head_size = _WRITE_FRAME.size
    key_len_at = _KEYLEN.unpack_from
    nodes: Dict[bytes, str] = {}
    end = len(buffer)
    # The node id of the frame before, what a plain value's frame of its
    # holds from its flags to its node id, and the struct that reads one.
    last_node, last_tag = "", b""
    same: Callable[[bytes, int], Tuple[Any, ...]] = head
    same_size = end + 1  # none yet
    offset = 0
    try:
        while offset < end:
            if end - offset >= same_size:
                length, kind, seq, ms, counter, tag, key_len = same(buffer, offset)
                if tag == last_tag and kind == b"W":
                    stop = offset + 4 + length
                    at = offset + same_size + key_len  # the value's first byte
                    if stop > end:
                        raise WireError(f"not a whole write frame at byte {offset}")
                    if at > stop:
                        raise WireError("truncated key in write frame")
                    add_seq(seq)
                    add_key(buffer[at - key_len : at])
                    add_entry((buffer[at:stop], ms, counter, last_node))
                    offset = stop
                    continue
            length, kind, seq, ms, counter, flags, node_len = head(buffer, offset)
            stop = offset + 4 + length
            if kind != b"W" or stop > end:
                raise WireError(f"not a whole write frame at byte {offset}")
            at = offset + head_size
            raw = buffer[at : at + node_len]
            node = nodes.get(raw)
            if node is None:
                node = nodes[raw] = raw.decode("ascii")
            if node is not last_node:
                last_node = node
                last_tag = b"\x00" + node_len.to_bytes(2, "big") + raw
                heads = _same_node_heads.get(node_len)
                if heads is None:
                    heads = _same_node_heads[node_len] = struct.Struct(
                        f">IcQQI{3 + node_len}sI")
                same, same_size = heads.unpack_from, heads.size
            at += node_len
            expires = 0
            if flags == _EXPIRES:
                (expires,) = _SEQ.unpack_from(buffer, at)
                at += _SEQ.size
            (key_len,) = key_len_at(buffer, at)
            at += 4
            key = buffer[at : at + key_len]
            if len(key) != key_len or at + key_len > stop:
                raise WireError("truncated key in write frame")
            rest = buffer[at + key_len : stop]
            entry: Entry
            if flags == _EXPIRES:
                entry = expiring_entry(rest, expires, ms, counter, node)
            elif flags == _COUNTER:
                entry = _counter(rest, ms, counter, node)
            else:
                entry = (None if flags & _TOMBSTONE else rest, ms, counter, node)
            add_seq(seq)
            add_key(key)
            add_entry(entry)
            offset = stop
    except (struct.error, UnicodeDecodeError) as e:
        raise WireError(f"malformed frame: {e}") from e
    return seqs, keys, entries


class FrameDecoder:
    """Cuts a byte stream into frames; refuses any frame over ``max_frame``.

    A frame that arrives over many reads is collected unjoined until all of it
    is here, so the work is linear in the bytes however the stream is cut.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._parts: List[bytes] = []
        self._have = 0
        # Bytes needed before the collected parts are worth joining: the
        # whole frame under way, or its length prefix.
        self._need = 0

    def feed(self, data: bytes) -> List[Frame]:
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._parts)
            self._parts = []
        frames = []
        offset = 0
        end = len(data)
        need = 4
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(data, offset)
            if length > self.max_frame or length == 0:
                raise WireError(f"frame of {length} bytes refused")
            if end - offset - 4 < length:
                need = 4 + length
                break
            frames.append(decode_body(data[offset + 4 : offset + 4 + length]))
            offset += 4 + length
        if offset < end:
            self._parts = [data[offset:] if offset else data]
            self._have = end - offset
            self._need = need
        return frames

    def pending(self) -> int:
        """Bytes held back: the start of a frame that has not all arrived."""
        return self._have if self._parts else 0


# Last: paxoswire and batchwire build on this module's helpers.
from distkv.cluster import batchwire, paxoswire  # noqa: E402
