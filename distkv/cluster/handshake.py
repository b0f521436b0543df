"""The cluster secret: the peer handshake's proofs and the authenticated records, sans-IO.

Nodes that share a secret prove it to each other without sending it: each
side of a peer connection picks a fresh random nonce, and each proves
knowledge of the secret with an HMAC-SHA256 over the handshake's transcript
(both nonces and both node ids, in the canonical lines of :mod:`distkv.cluster.wire`)
and a label naming its role, so a dialler's proof is never an acceptor's and
no proof holds for another connection. Once both proofs are checked
(constant-time), each direction of the connection gets its own session key,
derived from the secret and the transcript, and the byte stream travels in
records: ``length:u32 payload tag``, the tag the first :data:`TAG_BYTES` of an
HMAC-SHA256 over the direction's record counter, the length and the payload.
A record carries whatever one write of the connection held (many frames);
a record that fails, is replayed, reordered or cut short, or announces more
than the connection's bound is an error and ends the connection.
:class:`Dialling` and :class:`Accepting` are the two sides' handshakes:
nonces and lines in, lines and a :class:`Session` out; nothing here does IO.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from distkv.cluster import wire
from distkv.ratelog import RateLimit

#: Random bytes in each side's nonce.
NONCE_BYTES = 32
#: The shortest secret accepted: a secret anyone can guess protects nothing.
MIN_SECRET_BYTES = 16
#: Bytes of the HMAC kept in each record: 128 bits.
TAG_BYTES = 16
#: Peers whose failures get log lines rate-limited apart from the others'.
LOG_LIMITS = 64

_DIALER = b"distkv peer proof: dialler"
_ACCEPTOR = b"distkv peer proof: acceptor"
_REFUSAL = b"distkv peer refusal: acceptor"
_DIALER_RECORDS = b"distkv peer records: dialler to acceptor"
_ACCEPTOR_RECORDS = b"distkv peer records: acceptor to dialler"

_HEAD = struct.Struct(">I")
#: SHA-256's block size, which HMAC pads its key to.
_BLOCK = 64
_COUNTED = struct.Struct(">QI")


class AuthError(Exception):
    """The other side did not prove the cluster secret, or the two sides'
    configurations disagree; ``refusal`` is what the acceptor answers, if anything."""

    def __init__(self, why: str, refusal: Optional[Tuple[str, str]] = None) -> None:
        super().__init__(why)
        self.why = why
        self.refusal = refusal


class RecordError(Exception):
    """A record on an authenticated connection failed; drop the connection."""


def max_record(max_frame: int) -> int:
    """The largest record payload a connection accepts: one whole frame and
    its length prefix (a larger write is cut into several records)."""
    return max_frame + 4


class Secret:
    """The cluster secret, held as an HMAC key; never shown."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a cluster secret needs at least {MIN_SECRET_BYTES} bytes")
        self._key = hmac.new(secret, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "<Secret>"

    def _mac(self, label: bytes, *parts: bytes) -> bytes:
        mac = self._key.copy()
        mac.update(label)
        for part in parts:
            # Length-prefixed: no two different transcripts read the same.
            mac.update(_HEAD.pack(len(part)))
            mac.update(part)
        return mac.digest()

    def proof(self, dialler: bool, transcript: bytes) -> bytes:
        return self._mac(_DIALER if dialler else _ACCEPTOR, transcript)

    def proves(self, dialler: bool, transcript: bytes, proof: bytes) -> bool:
        return hmac.compare_digest(self.proof(dialler, transcript), proof)

    def session(self, dialler: bool, transcript: bytes, limit: int) -> Session:
        """Our side's record keys: what we seal and what we open."""
        outgoing = self._mac(_DIALER_RECORDS, transcript)
        incoming = self._mac(_ACCEPTOR_RECORDS, transcript)
        if not dialler:
            outgoing, incoming = incoming, outgoing
        return Session(Sealer(outgoing, limit), Opener(incoming, limit))


def _pads(key: bytes) -> Tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hashes with the key's pads taken in
    (RFC 2104): each record's tag then costs two hashlib copies, not the
    ``hmac`` module's object and its four."""
    block = key.ljust(_BLOCK, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in block)),
            hashlib.sha256(bytes(b ^ 0x5C for b in block)))


class Sealer:
    """Cuts what a connection writes into authenticated records."""

    def __init__(self, key: bytes, limit: int) -> None:
        self._inner, self._outer = _pads(key)
        self._limit = limit
        self._counter = 0

    def seal(self, data: bytes) -> bytes:
        limit = self._limit
        if len(data) <= limit:
            return self._record(data)
        return b"".join([self._record(data[at : at + limit]) for at in range(0, len(data), limit)])

    def _record(self, payload: bytes) -> bytes:
        counted = _COUNTED.pack(self._counter, len(payload))
        self._counter += 1
        inner = self._inner.copy()
        inner.update(counted)
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return b"".join((counted[8:], payload, outer.digest()[:TAG_BYTES]))


class Opener:
    """Checks the records a connection receives; their payloads, in order.

    A record that arrives over many reads is collected unjoined until all of
    it is here (the work stays linear in the bytes); a head announcing more
    than ``limit`` bytes is refused before any of them is buffered.
    """

    def __init__(self, key: bytes, limit: int) -> None:
        self._inner, self._outer = _pads(key)
        self.limit = limit
        self._counter = 0
        self._parts: List[bytes] = []
        self._have = 0
        self._need = 0

    def feed(self, data: bytes) -> List[bytes]:
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._parts)
            self._parts = []
        payloads = []
        offset = 0
        end = len(data)
        need = _HEAD.size
        while end - offset >= _HEAD.size:
            (length,) = _HEAD.unpack_from(data, offset)
            if length == 0 or length > self.limit:
                raise RecordError(f"record of {length} bytes refused (at most {self.limit})")
            stop = offset + _HEAD.size + length + TAG_BYTES
            if stop > end:
                need = stop - offset
                break
            payload = data[offset + _HEAD.size : stop - TAG_BYTES]
            inner = self._inner.copy()
            inner.update(_COUNTED.pack(self._counter, length))
            inner.update(payload)
            outer = self._outer.copy()
            outer.update(inner.digest())
            if not hmac.compare_digest(outer.digest()[:TAG_BYTES], data[stop - TAG_BYTES : stop]):
                raise RecordError(f"record {self._counter} failed authentication")
            self._counter += 1
            payloads.append(payload)
            offset = stop
        if offset < end:
            self._parts = [data[offset:] if offset else data]
            self._have = end - offset
            self._need = need
        return payloads


class Session(NamedTuple):
    """One side's record layer: a sealer for what it sends, an opener for what it gets."""

    sealer: Sealer
    opener: Opener


class PeerAuth:
    """A node's cluster secret (None: it has none), where its nonces come
    from, and its count of failed handshakes and records, with a rate limit
    on their log lines for each reason and peer, so that every peer's
    reason shows up, for the first :data:`LOG_LIMITS` of them (a crowd of
    made-up peers shares one more)."""

    def __init__(self, secret: Optional[bytes], node: str, clock: Callable[[], float],
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.secret = None if secret is None else Secret(secret)
        self.node = node
        self._random = random
        #: Peer handshakes that failed the secret's proof or disagreed on having one.
        self.failures = 0
        #: Records that failed on an admitted connection.
        self.bad_records = 0
        self._clock = clock
        self._limits: Dict[Tuple[str, str], RateLimit] = {}
        self._crowd = RateLimit(clock, 1.0)

    def nonce(self) -> bytes:
        return self._random(NONCE_BYTES)

    def log_limit(self, reason: str, peer: str) -> RateLimit:
        """The rate limit on log lines that give ``reason`` for ``peer``."""
        limit = self._limits.get((reason, peer))
        if limit is None:
            if len(self._limits) >= LOG_LIMITS:
                return self._crowd
            limit = self._limits[reason, peer] = RateLimit(self._clock, 1.0)
        return limit


class Dialling:
    """The connecting side's handshake (``nonce``: our fresh nonce)."""

    def __init__(self, secret: Optional[Secret], greeting: wire.Greeting, nonce: bytes,
                 limit: int) -> None:
        self._secret = secret
        self._limit = limit
        self._line = wire.greeting_line(greeting._replace(nonce=None if secret is None else nonce))
        self._challenge: Optional[bytes] = None
        self.acceptor: Optional[str] = None

    def greeting_line(self) -> bytes:
        return self._line

    def challenged(self, line: bytes) -> bytes:
        """The acceptor's challenge (WireError if malformed); our proof line."""
        node, nonce = wire.parse_challenge(line)
        if self._secret is None:
            raise AuthError("requires a cluster secret and this node has none")
        if self._challenge is not None:
            raise AuthError("sent a second challenge")
        self.acceptor = node
        self._challenge = wire.challenge_line(node, nonce)
        return wire.proof_line(self._secret.proof(True, self._line + self._challenge))

    def refusal_proven(self, code: str, proof: Optional[bytes]) -> bool:
        """Whether a refusal came from a node that knows the secret (always,
        without a secret: there is nothing to prove)."""
        secret = self._secret
        if secret is None:
            return True
        if self._challenge is None or proof is None:
            return False
        expected = secret._mac(_REFUSAL, self._line + self._challenge, code.encode("ascii"))
        return hmac.compare_digest(expected, proof)

    def accepted(self, accept: wire.Accept) -> Optional[Session]:
        """The acceptor's answer: its session, once its proof holds (None
        without a secret); AuthError otherwise."""
        secret = self._secret
        proof = accept.proof
        if secret is None:
            if proof is not None:
                raise AuthError("sent a cluster secret proof and this node has none")
            return None
        if self._challenge is None:
            raise AuthError("has no cluster secret and this node requires one")
        if proof is None or accept.hello.node != self.acceptor:
            raise AuthError("answered without a proof of the cluster secret")
        transcript = self._line + self._challenge + wire.accept_line(accept._replace(proof=None))
        if not secret.proves(False, transcript, proof):
            raise AuthError("failed to prove the cluster secret (another secret?)")
        return secret.session(True, self._line + self._challenge, self._limit)


class Accepting:
    """The accepting side's handshake, as node ``node`` (``nonce``: our fresh nonce)."""

    def __init__(self, secret: Optional[Secret], node: str, nonce: bytes, limit: int) -> None:
        self._secret = secret
        self._node = node
        self._nonce = nonce
        self._limit = limit
        self._transcript: Optional[bytes] = None
        self.proven = False

    def greeted(self, greeting: wire.Greeting) -> Optional[bytes]:
        """The caller's greeting: our challenge line, or None when neither
        side has a secret (answer at once); AuthError when one side has one."""
        nonce = greeting.nonce
        if self._secret is None:
            if nonce is not None:
                raise AuthError(
                    "requires a cluster secret and this node has none",
                    ("cluster-secret", "this node has no cluster secret"),
                )
            return None
        if nonce is None:
            raise AuthError(
                "has no cluster secret and this node requires one",
                ("cluster-secret", "this node requires a cluster secret"),
            )
        challenge = wire.challenge_line(self._node, self._nonce)
        self._transcript = wire.greeting_line(greeting) + challenge
        return challenge

    def proved(self, line: bytes) -> None:
        """The caller's proof line; AuthError unless it proves the secret."""
        proof = wire.parse_proof(line)
        assert self._secret is not None and self._transcript is not None
        if not self._secret.proves(True, self._transcript, proof):
            raise AuthError(
                "failed to prove the cluster secret (another secret?)",
                ("cluster-secret", "cluster secret proof failed"),
            )
        self.proven = True

    @property
    def challenging(self) -> bool:
        """A challenge went out and its proof has not come back yet."""
        return self._transcript is not None and not self.proven

    def refusal_line(self, code: str, message: str) -> bytes:
        """Our refusal line; once the caller proved the secret, with our proof
        over the transcript and the code, so that a refusal with a lasting
        effect on the caller (``self``, ``removed``) cannot be forged."""
        secret = self._secret
        if secret is None or not self.proven or self._transcript is None:
            return wire.refusal_line(code, message)
        proof = secret._mac(_REFUSAL, self._transcript, code.encode("ascii"))
        return wire.refusal_line(code, message, proof)

    def answer(self, accept: wire.Accept) -> Tuple[bytes, Optional[Session]]:
        """Our accept line, with our proof, and our session (None without a secret)."""
        secret = self._secret
        if secret is None:
            return wire.accept_line(accept), None
        assert self.proven and self._transcript is not None
        accept = accept._replace(proof=None)
        proof = secret.proof(False, self._transcript + wire.accept_line(accept))
        return (wire.accept_line(accept._replace(proof=proof)),
                secret.session(False, self._transcript, self._limit))

