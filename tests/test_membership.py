"""The member list on its own: its merge rule, its frame, and its place on disk."""

from __future__ import annotations

import itertools
from typing import List

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from distkv.cluster import wire
from distkv.cluster.membership import (
    MAX_MEMBERS,
    MEMBER,
    REMOVED,
    REPLACED,
    Member,
    Membership,
    derived_node_id,
    merge_entries,
)
from distkv.disk.datafile import Disk, DiskError
from distkv.store.entries import ZERO
from distkv.store.hlc import Version
from tests.proptest import examples
from tests.scratch import scratch_dir


def v(ms: int, node: str = "x") -> Version:
    return Version(ms, 0, node)


def entry(node: str = "b", state: str = MEMBER, ms: int = 10, host: str = "10.0.0.2",
          port: int = 9000, address_ms: int = 10) -> Member:
    return Member(node, state, v(ms), host, port, v(address_ms))


def same_version(above: Version) -> Version:
    return above


entries = st.builds(
    entry,
    node=st.sampled_from(["a", "b", "c"]),
    state=st.sampled_from([MEMBER, REPLACED, REMOVED]),
    ms=st.integers(0, 5),
    host=st.sampled_from(["", "10.0.0.1", "10.0.0.2"]),
    port=st.sampled_from([9000, 9001]),
    address_ms=st.integers(0, 5),
)


class MergeRuleTests(SynchronousTestCase):
    @settings(max_examples=examples(300), deadline=None)
    @given(st.lists(entries, max_size=8), st.randoms())
    def test_every_order_and_duplication_of_delivery_gives_one_list(
        self, heard: List[Member], rng: object
    ) -> None:
        """Merging the same entries in any order, some twice, ends in the same list."""
        first = Membership("me")
        first.merge(heard, same_version)
        shuffled = heard + heard[: len(heard) // 2]
        rng.shuffle(shuffled)  # type: ignore[attr-defined]
        second = Membership("me")
        for item in shuffled:
            second.merge([item], same_version)
        self.assertEqual(first.entries, second.entries)

    @given(entries, entries, entries)
    def test_the_merge_of_two_entries_is_commutative_and_associative(
        self, a: Member, b: Member, c: Member
    ) -> None:
        """merge(a, b) == merge(b, a) and grouping does not matter (one node id)."""
        a, b, c = (m._replace(node="n") for m in (a, b, c))
        self.assertEqual(merge_entries(a, b), merge_entries(b, a))
        self.assertEqual(merge_entries(merge_entries(a, b), c),
                         merge_entries(a, merge_entries(b, c)))
        self.assertEqual(merge_entries(a, a), a)

    def test_removal_is_final_whatever_the_versions(self) -> None:
        """A removed id stays removed even against a newer member entry."""
        m = Membership("me")
        m.merge([entry(state=REMOVED, ms=5)], same_version)
        m.merge([entry(state=MEMBER, ms=500)], same_version)
        self.assertTrue(m.is_removed("b"))
        self.assertEqual(m.peers(), [])

    def test_a_replaced_node_that_comes_back_states_itself_above_the_mark(self) -> None:
        """A node told it was replaced (its address answered as another node)
        re-enters itself with a version above that mark."""
        m = Membership("me")
        m.state_self("10.0.0.1", 9000, lambda above: v(1))
        m.merge([entry(node="me", state=REPLACED, ms=50, host="10.0.0.1")],
                lambda above: v(above.ms + 1, "me"))
        mine = m.get("me")
        assert mine is not None
        self.assertEqual((mine.state, mine.version), (MEMBER, v(51, "me")))

    def test_an_address_a_node_does_not_know_is_filled_in_by_the_node_it_calls(self) -> None:
        """Its own entry says no host; the host it called from fills it in, and
        that outranks the empty host wherever the two entries meet."""
        m = Membership("me")
        own = entry(node="b", host="", port=9000, ms=7, address_ms=7)
        m.merge([own], same_version)
        m.observed("b", "10.0.0.9", 9000)
        filled = m.get("b")
        assert filled is not None
        self.assertEqual(filled.address, ("10.0.0.9", 9000))
        other = Membership("other")
        other.merge([filled, own], same_version)
        self.assertEqual(other.get("b"), filled)

    def test_a_caller_that_states_its_address_keeps_it(self) -> None:
        """The address a node states is not overwritten by the one it calls from."""
        m = Membership("me")
        m.merge([entry(node="b", host="10.0.0.2", port=9000)], same_version)
        m.observed("b", "192.168.1.1", 9000)
        self.assertEqual(m.get("b").address, ("10.0.0.2", 9000))  # type: ignore[union-attr]

    def test_the_list_is_bounded(self) -> None:
        """Past MAX_MEMBERS entries a new id is refused and counted."""
        m = Membership("me")
        m.merge([entry(node=f"n{i}") for i in range(MAX_MEMBERS + 3)], same_version)
        self.assertEqual((len(m.entries), m.refused), (MAX_MEMBERS, 3))
        self.assertTrue(m.full())

    def test_a_node_whose_list_is_full_refuses_to_link_a_node_it_cannot_list(self) -> None:
        """A caller the full list cannot hold is refused at the handshake (the
        stability horizon would not wait for it), and STATUS counts the refusals; a
        listed member still links."""
        from twisted.internet.task import Clock

        from distkv.node import Node

        node = Node(Clock(), "me")
        node.membership.merge([entry(node=f"n{i}") for i in range(MAX_MEMBERS + 2)],
                              same_version)
        caller = wire.Greeting(wire.Hello("stranger", "abc"), 9000)
        self.assertEqual(node.vet(caller)[0], "members-full")  # type: ignore[index]
        member = wire.Greeting(wire.Hello("n1", "abc"), 9000)
        self.assertIsInstance(node.vet(member), wire.Accept)
        self.assertIn(f"members_refused {node.membership.refused}", node.status_lines())

    def test_a_memory_only_nodes_default_id_is_its_address(self) -> None:
        """The same address gives the same id; unsafe characters become dashes."""
        self.assertEqual(derived_node_id("10.0.0.1", 9000), "10.0.0.1:9000")
        self.assertEqual(derived_node_id("host name", 1), "host-name:1")
        self.assertTrue(wire.valid_node_id(derived_node_id("x" * 300, 65535)))


class MemberFrameTests(SynchronousTestCase):
    def test_a_member_list_survives_the_wire(self) -> None:
        """Every state, an unknown host and the bound versions round-trip."""
        listed = (entry(node="a"), entry(node="b", state=REPLACED, host="", port=0),
                  Member("c", REMOVED, v(3, "c"), "::1", 1, ZERO))
        frame = wire.encode_members(listed)
        decoded = wire.FrameDecoder(1 << 20).feed(frame)
        self.assertEqual(decoded, [wire.Members(listed)])

    def test_a_frame_fed_a_byte_at_a_time_is_the_same(self) -> None:
        listed = (entry(node="a"), entry(node="b"))
        decoder = wire.FrameDecoder(1 << 20)
        got = list(itertools.chain.from_iterable(
            decoder.feed(bytes([byte])) for byte in wire.encode_members(listed)))
        self.assertEqual(got, [wire.Members(listed)])

    def test_the_largest_member_list_fits_the_smallest_frame_limit(self) -> None:
        """MAX_MEMBERS entries with the longest ids and hosts pass any node's frame limit."""
        def longest(i: int) -> Member:
            node = f"{i}-".ljust(64, "x")
            return Member(node, REMOVED, Version(2**63 - 1, 2**32 - 1, node), "h" * 255, 65535,
                          Version(2**63 - 1, 2**32 - 1, node))

        frame = wire.encode_members([longest(i) for i in range(MAX_MEMBERS)])
        decoder = wire.FrameDecoder(wire.max_frame(1))
        self.assertEqual(len(decoder.feed(frame)[0].entries), MAX_MEMBERS)  # type: ignore[union-attr]

    def test_malformed_member_frames_are_protocol_errors(self) -> None:
        """Bad state, bad host, host without port, too many, truncated, trailing bytes."""
        good = wire.encode_members((entry(node="a"),))[4:]
        bad_state = good.replace(b"\x01a\x00", b"\x01a\x07", 1)
        too_many = b"M" + (MAX_MEMBERS + 1).to_bytes(2, "big")
        bad_host = wire.encode_members((entry(node="a", host="10.0.0.2"),))[4:].replace(
            b"10.0.0.2", b"10 0.0.2")
        no_port = wire.encode_members((entry(node="a", port=1),))[4:][:-2] + b"\x00\x00"
        for body in (bad_state, too_many, bad_host, no_port, good[:-1], good + b"x",
                     b"M", b"M\x00\x01\x00\x00"):
            with self.assertRaises(wire.WireError, msg=repr(body)):
                wire.decode_body(body)


class MemberDiskTests(SynchronousTestCase):
    def test_the_member_list_is_kept_in_the_data_dir(self) -> None:
        """Saved, then read back by the next open, unchanged."""
        path = scratch_dir(self)
        listed = [entry(node="a"), entry(node="b", state=REMOVED, host="", port=0)]
        disk = Disk(path)
        disk.claim("me", "me")
        disk.save_members(listed)
        disk.close()
        again = Disk(path)
        self.addCleanup(again.close)
        self.assertEqual(again.members(), listed)

    def test_a_malformed_saved_list_stops_the_node_with_a_clear_message(self) -> None:
        path = scratch_dir(self)
        disk = Disk(path)
        self.addCleanup(disk.close)
        disk._set_meta(members='[["a", "bogus", "1:0:x", "", 0, "1:0:x"]]')
        with self.assertRaises(DiskError) as caught:
            disk.members()
        self.assertIn("malformed member list", str(caught.exception))
