"""The cluster secret's handshake and records, with no network: proofs hold
only for the same secret, the same connection and the right role, and
records that were tampered with, replayed, reordered or oversized are refused."""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.handshake import (
    LOG_LIMITS,
    MIN_SECRET_BYTES,
    TAG_BYTES,
    Accepting,
    AuthError,
    Dialling,
    Opener,
    PeerAuth,
    RecordError,
    Sealer,
    Secret,
    Session,
    max_record,
)

SECRET = Secret(b"correct horse battery staple")
OTHER = Secret(b"another cluster's secret, same length")
CALLER = wire.Greeting(wire.Hello("caller", "c0ffee"), 9001)
ANSWER = wire.Accept(wire.Hello("answerer", "beef"), 7, True)
LIMIT = max_record(wire.max_frame(1 << 20))


def nonce(byte: int) -> bytes:
    return bytes([byte]) * 32


def exchange(dial_secret: Optional[Secret] = SECRET, accept_secret: Optional[Secret] = SECRET,
             ) -> Tuple[Dialling, Accepting, List[bytes]]:
    """Run the handshake up to the acceptor's check of the proof; the lines sent."""
    dialling = Dialling(dial_secret, CALLER, nonce(1), LIMIT)
    accepting = Accepting(accept_secret, "answerer", nonce(2), LIMIT)
    greeting = dialling.greeting_line()
    challenge = accepting.greeted(wire.parse_greeting(greeting))
    assert challenge is not None
    proof = dialling.challenged(challenge)
    return dialling, accepting, [greeting, challenge, proof]


def sessions() -> Tuple[Session, Session]:
    dialling, accepting, lines = exchange()
    accepting.proved(lines[2])
    line, theirs = accepting.answer(ANSWER)
    reply = wire.parse_reply(line)
    assert isinstance(reply, wire.Accept)
    ours = dialling.accepted(reply)
    assert ours is not None and theirs is not None
    return ours, theirs


class HandshakeTests(SynchronousTestCase):
    def test_the_same_secret_admits_both_sides_and_their_records_flow_both_ways(self) -> None:
        """A good exchange: each side's proof holds, and each opens what the other seals."""
        ours, theirs = sessions()
        self.assertEqual(theirs.opener.feed(ours.sealer.seal(b"frames one way")),
                         [b"frames one way"])
        self.assertEqual(ours.opener.feed(theirs.sealer.seal(b"and back")), [b"and back"])

    def test_the_lines_carry_the_grammar_and_never_the_secret(self) -> None:
        """Greeting with a 64-hex nonce, challenge, proof, OK with a proof; no secret bytes."""
        dialling, accepting, lines = exchange()
        accepting.proved(lines[2])
        line, _ = accepting.answer(ANSWER)
        self.assertTrue(lines[0].startswith(b"DISTKV-PEER 6 caller c0ffee 9001 " + b"01" * 32))
        self.assertEqual(lines[1], b"DISTKV-PEER-CHALLENGE 6 answerer " + b"02" * 32 + b"\r\n")
        self.assertRegex(lines[2], rb"^DISTKV-PEER-PROOF [0-9a-f]{64}\r\n$")
        self.assertRegex(line, rb"^DISTKV-PEER-OK 6 answerer beef 7 serving [0-9a-f]{64}\r\n$")
        for sent in lines + [line]:
            self.assertNotIn(b"battery", sent)

    def test_another_secret_fails_the_callers_proof(self) -> None:
        """The acceptor refuses a caller with another secret before it vets or answers it."""
        _, accepting, lines = exchange(dial_secret=OTHER)
        with self.assertRaises(AuthError) as caught:
            accepting.proved(lines[2])
        self.assertEqual(caught.exception.refusal, ("cluster-secret", "cluster secret proof failed"))
        self.assertFalse(accepting.proven)

    def test_an_acceptor_with_another_secret_fails_the_dialler_check(self) -> None:
        """A node that answers with another secret's proof is not linked to."""
        dialling = Dialling(SECRET, CALLER, nonce(1), LIMIT)
        impostor = Accepting(OTHER, "answerer", nonce(2), LIMIT)
        challenge = impostor.greeted(wire.parse_greeting(dialling.greeting_line()))
        assert challenge is not None
        impostor.proven = True  # it cannot check our proof; pretend it could
        line, _ = impostor.answer(ANSWER)
        reply = wire.parse_reply(line)
        assert isinstance(reply, wire.Accept)
        dialling.challenged(challenge)
        with self.assertRaises(AuthError):
            dialling.accepted(reply)

    def test_a_proof_replayed_in_the_other_role_fails(self) -> None:
        """The dialler's proof, sent back as the acceptor's, does not hold (role label)."""
        dialling, accepting, lines = exchange()
        caller_proof = wire.parse_proof(lines[2])
        with self.assertRaises(AuthError):
            dialling.accepted(ANSWER._replace(proof=caller_proof))
        # And an acceptor's proof from another connection does not prove a caller.
        accepting.proved(lines[2])
        line, _ = accepting.answer(ANSWER)
        reply = wire.parse_reply(line)
        assert isinstance(reply, wire.Accept) and reply.proof is not None
        _, second, _ = exchange()
        with self.assertRaises(AuthError):
            second.proved(wire.proof_line(reply.proof))

    def test_a_proof_replayed_on_a_new_connection_fails(self) -> None:
        """A recorded proof does not hold against a fresh acceptor nonce."""
        _, _, lines = exchange()
        fresh = Accepting(SECRET, "answerer", nonce(3), LIMIT)
        fresh.greeted(wire.parse_greeting(lines[0]))
        with self.assertRaises(AuthError):
            fresh.proved(lines[2])

    def test_a_tampered_nonce_or_node_id_fails_the_proof(self) -> None:
        """A man in the middle who changes a nonce or an id breaks the caller's proof."""
        dialling = Dialling(SECRET, CALLER, nonce(1), LIMIT)
        accepting = Accepting(SECRET, "answerer", nonce(2), LIMIT)
        greeting = wire.parse_greeting(dialling.greeting_line())
        challenge = accepting.greeted(greeting._replace(nonce=nonce(9)))
        assert challenge is not None
        with self.assertRaises(AuthError):
            accepting.proved(dialling.challenged(challenge))
        dialling = Dialling(SECRET, CALLER, nonce(1), LIMIT)
        accepting = Accepting(SECRET, "answerer", nonce(2), LIMIT)
        accepting.greeted(wire.parse_greeting(dialling.greeting_line()))
        forged = wire.challenge_line("answerer", nonce(8))
        with self.assertRaises(AuthError):
            accepting.proved(dialling.challenged(forged))

    def test_a_tampered_accept_line_fails_the_dialler_check(self) -> None:
        """The acceptor's proof covers its seen and state: changing them is detected."""
        dialling, accepting, lines = exchange()
        accepting.proved(lines[2])
        line, _ = accepting.answer(ANSWER)
        reply = wire.parse_reply(line)
        assert isinstance(reply, wire.Accept)
        with self.assertRaises(AuthError):
            dialling.accepted(reply._replace(seen=0))

    def test_a_node_without_a_secret_and_one_with_refuse_each_other_saying_why(self) -> None:
        """No secret meets a secret either way: AuthError with a reason, and a refusal line."""
        accepting = Accepting(SECRET, "answerer", nonce(2), LIMIT)
        plain = Dialling(None, CALLER, b"", LIMIT)
        with self.assertRaises(AuthError) as caught:
            accepting.greeted(wire.parse_greeting(plain.greeting_line()))
        self.assertIn("has no cluster secret and this node requires one", caught.exception.why)
        self.assertEqual(caught.exception.refusal[0], "cluster-secret")  # type: ignore[index]
        plain_acceptor = Accepting(None, "answerer", b"", LIMIT)
        with self.assertRaises(AuthError) as caught:
            plain_acceptor.greeted(
                wire.parse_greeting(Dialling(SECRET, CALLER, nonce(1), LIMIT).greeting_line()))
        self.assertIn("requires a cluster secret and this node has none", caught.exception.why)
        # A secret dialler answered OK with no challenge: the acceptor has none.
        with self.assertRaises(AuthError):
            Dialling(SECRET, CALLER, nonce(1), LIMIT).accepted(ANSWER)
        with self.assertRaises(AuthError):
            plain.challenged(wire.challenge_line("answerer", nonce(2)))

    def test_without_secrets_the_old_two_line_exchange_needs_no_records(self) -> None:
        """Neither side has a secret: no challenge, an OK with ``-``, and no session."""
        dialling = Dialling(None, CALLER, b"", LIMIT)
        accepting = Accepting(None, "answerer", b"", LIMIT)
        self.assertTrue(dialling.greeting_line().endswith(b" 9001 -\r\n"))
        self.assertIsNone(accepting.greeted(wire.parse_greeting(dialling.greeting_line())))
        line, session = accepting.answer(ANSWER)
        self.assertIsNone(session)
        self.assertTrue(line.endswith(b" serving -\r\n"))
        reply = wire.parse_reply(line)
        assert isinstance(reply, wire.Accept)
        self.assertIsNone(dialling.accepted(reply))

    def test_short_secrets_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            Secret(b"x" * (MIN_SECRET_BYTES - 1))


class RefusalProofTests(SynchronousTestCase):
    def test_a_refusal_after_the_callers_proof_carries_a_proof_only_the_secret_makes(
            self) -> None:
        """Once the caller proved the secret, the acceptor's refusal carries its own
        proof over the transcript and the code: the dialler accepts it, and not the
        same line with another code, another secret's proof, or no proof."""
        dialling, accepting, lines = exchange()
        self.assertEqual(accepting.refusal_line("self", "x"), wire.refusal_line("self", "x"))
        accepting.proved(lines[2])
        line = accepting.refusal_line("removed", "node n1 was removed")
        code, message = wire.parse_reply(line)  # type: ignore[misc]
        text, proof = wire.refusal_proof(message)
        self.assertEqual((code, text), ("removed", "node n1 was removed"))
        self.assertTrue(dialling.refusal_proven("removed", proof))
        self.assertFalse(dialling.refusal_proven("self", proof))
        self.assertFalse(dialling.refusal_proven("removed", None))
        forged, _, _ = exchange(dial_secret=OTHER)
        self.assertFalse(forged.refusal_proven("removed", proof))
        unsecured = Dialling(None, CALLER, nonce(1), LIMIT)
        self.assertTrue(unsecured.refusal_proven("self", None))


class RecordTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sealer = Sealer(b"k" * 32, 64)
        self.opener = Opener(b"k" * 32, 64)

    def test_records_fed_a_byte_at_a_time_give_back_the_stream(self) -> None:
        """Payloads come out whole and in order however the bytes are cut."""
        data = b"".join(self.sealer.seal(b"frame %d " % i * 3) for i in range(5))
        out: List[bytes] = []
        for i in range(len(data)):
            out.extend(self.opener.feed(data[i : i + 1]))
        self.assertEqual(out, [b"frame %d " % i * 3 for i in range(5)])

    def test_a_large_write_is_cut_into_bounded_records(self) -> None:
        """A write over the bound goes as several records, each accepted."""
        sealed = self.sealer.seal(b"x" * 200)
        self.assertEqual(len(sealed), 200 + 4 * (4 + TAG_BYTES))
        self.assertEqual(b"".join(self.opener.feed(sealed)), b"x" * 200)

    def test_a_flipped_bit_anywhere_fails_the_record(self) -> None:
        """Any changed byte (length, payload or tag) is refused."""
        sealed = self.sealer.seal(b"payload")
        for at in range(len(sealed)):
            tampered = bytearray(sealed)
            tampered[at] ^= 1
            with self.assertRaises(RecordError):
                Opener(b"k" * 32, 64).feed(bytes(tampered) + b"\0" * 64)

    def test_a_replayed_record_fails(self) -> None:
        """The same record twice: the second fails (the counter moved on)."""
        sealed = self.sealer.seal(b"SET once")
        self.assertEqual(self.opener.feed(sealed), [b"SET once"])
        with self.assertRaises(RecordError):
            self.opener.feed(sealed)

    def test_reordered_records_fail(self) -> None:
        first, second = self.sealer.seal(b"one"), self.sealer.seal(b"two")
        with self.assertRaises(RecordError):
            self.opener.feed(second + first)

    def test_a_record_sealed_with_another_key_fails(self) -> None:
        """Bytes injected by someone without the session key are refused."""
        with self.assertRaises(RecordError):
            self.opener.feed(Sealer(b"x" * 32, 64).seal(b"H forged"))

    def test_an_oversized_or_empty_record_header_is_refused_before_buffering(self) -> None:
        """A head announcing more than the bound (or nothing) fails at once."""
        with self.assertRaises(RecordError):
            self.opener.feed(b"\x7f\xff\xff\xff")
        with self.assertRaises(RecordError):
            Opener(b"k" * 32, 64).feed(b"\x00\x00\x00\x41")
        with self.assertRaises(RecordError):
            Opener(b"k" * 32, 64).feed(b"\x00\x00\x00\x00")

    def test_the_two_directions_use_different_keys(self) -> None:
        """A record sent one way, reflected back, fails."""
        ours, theirs = sessions()
        with self.assertRaises(RecordError):
            ours.opener.feed(ours.sealer.seal(b"reflected"))

    def test_a_record_tag_is_hmac_sha256_over_counter_length_and_payload(self) -> None:
        """The tag is the standard HMAC-SHA256 (RFC 2104), truncated to 16 bytes."""
        import hashlib
        import hmac
        import struct

        self.sealer.seal(b"first")
        record = self.sealer.seal(b"second")
        expected = hmac.new(b"k" * 32, struct.pack(">QI", 1, 6) + b"second",
                            hashlib.sha256).digest()[:TAG_BYTES]
        self.assertEqual(record, b"\x00\x00\x00\x06second" + expected)


class PeerAuthTests(SynchronousTestCase):
    def test_log_lines_are_limited_per_reason_and_peer_and_a_crowd_shares_one(self) -> None:
        """Each peer's reason gets its own line a second; made-up peers past the
        first LOG_LIMITS share one limit, so a flood cannot flood the log."""
        auth = PeerAuth(None, "me", lambda: 0.0)
        self.assertEqual(auth.log_limit("why", "a").allow(), 0)
        self.assertEqual(auth.log_limit("why", "a").allow(), -1)
        self.assertEqual(auth.log_limit("why", "b").allow(), 0)
        self.assertEqual(auth.log_limit("other", "a").allow(), 0)
        for i in range(LOG_LIMITS * 2):
            auth.log_limit("why", f"made-up {i}").allow()
        crowd = auth.log_limit("why", "yet another")
        self.assertIs(crowd, auth.log_limit("why", "and another"))
        self.assertEqual(crowd.allow(), -1)
