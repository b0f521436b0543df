"""The hybrid logical clock: monotonic stamps, causality across skew, refusal of the far future."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from distkv.store.hlc import HybridClock, Version


class FakeWall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class HybridClockTests(SynchronousTestCase):
    def test_stamps_strictly_increase_when_wall_clock_stalls_or_goes_back(self) -> None:
        """Every stamp is above the previous one even if the wall clock jumps backwards."""
        wall = FakeWall(1000)
        clock = HybridClock("a", wall)
        stamps = [clock.now()]
        for ms in (1000, 1000, 999, 500, 1001, 1001):
            wall.ms = ms
            stamps.append(clock.now())
        self.assertEqual(stamps, sorted(stamps))
        self.assertEqual(len(set(stamps)), len(stamps))

    def test_a_held_clock_stamps_with_one_reading_until_released(self) -> None:
        """While held, stamps carry the millisecond of the first one after hold()
        and rise by counter however the wall moves; after release they follow
        the wall again, and still rise."""
        wall = FakeWall(1000)
        clock = HybridClock("a", wall)
        clock.hold()
        wall.ms = 1005  # the reading held is the first stamp's, not hold()'s
        stamps = []
        for ms in (1005, 1009, 1500):
            wall.ms = ms
            stamps.append(clock.now())
        self.assertEqual(stamps, [Version(1005, 0, "a"), Version(1005, 1, "a"), Version(1005, 2, "a")])
        self.assertGreater(clock.now_above(Version(1005, 9, "z")), Version(1005, 9, "z"))
        clock.release()
        self.assertEqual(clock.now(), Version(1500, 0, "a"))
        clock.hold()
        clock.release()  # held, never stamped: the next stamp still reads the wall
        wall.ms = 1600
        self.assertEqual(clock.now(), Version(1600, 0, "a"))

    def test_a_held_clock_judges_observed_versions_by_the_wall(self) -> None:
        """Holding the clock does not change what counts as too far ahead."""
        wall = FakeWall(1000)
        clock = HybridClock("a", wall, max_drift_ms=100)
        clock.hold()
        clock.now()
        wall.ms = 2000
        self.assertTrue(clock.observe(Version(2050, 0, "b")))
        self.assertFalse(clock.observe(Version(2200, 0, "b")))
        self.assertGreater(clock.now(), Version(2050, 0, "b"))
        clock.release()

    def test_observed_version_makes_the_next_stamp_larger(self) -> None:
        """A node whose clock is behind still stamps above a version it has seen."""
        clock = HybridClock("slow", FakeWall(1000))
        remote = Version(5000, 7, "fast")
        self.assertTrue(clock.observe(remote))
        self.assertGreater(clock.now(), remote)

    def test_now_above_beats_a_version_it_never_observed(self) -> None:
        """now_above returns a stamp above the given version whatever the wall clock says."""
        clock = HybridClock("a", FakeWall(10))
        target = Version(10_000_000, 3, "z")
        self.assertGreater(clock.now_above(target), target)

    @given(
        st.integers(0, 50),
        st.lists(st.tuples(st.integers(0, 60), st.integers(0, 5), st.sampled_from("amz")), max_size=30),
    )
    def test_now_above_is_above_the_version_and_every_earlier_stamp(
        self, wall_ms: int, targets: list  # type: ignore[type-arg]
    ) -> None:
        """Whatever the wall clock and the versions to beat (ties in ms and
        counter with any node id included), each stamp is above both."""
        clock = HybridClock("m", FakeWall(wall_ms))
        last = Version(0, 0, "")
        for ms, counter, node in targets:
            target = Version(ms, counter, node)
            stamp = clock.now_above(target)
            self.assertGreater(stamp, target)
            self.assertGreater(stamp, last)
            last = stamp
        self.assertGreater(clock.now_above(None), last)

    def test_the_counter_never_outgrows_its_32_bits(self) -> None:
        """Past the largest counter the wire can carry, the clock takes the next ms."""
        from distkv.cluster import wire
        from distkv.store.entries import make_entry
        from distkv.store.hlc import MAX_COUNTER

        clock = HybridClock("a", FakeWall(5))
        top = Version(5, MAX_COUNTER, "z")
        self.assertEqual(HybridClock("a", FakeWall(5)).now_above(top), Version(6, 0, "a"))
        self.assertTrue(clock.observe(top))
        stamp = clock.now()
        self.assertEqual(stamp, Version(6, 0, "a"))
        wire.encode_write(1, b"k", make_entry(b"v", stamp))  # packs

    def test_a_held_clock_also_moves_to_the_next_ms_past_the_largest_counter(self) -> None:
        """Held, the clock still never hands out a counter past 32 bits: it takes
        the next millisecond, above the held reading, and keeps rising from there."""
        from distkv.store.hlc import MAX_COUNTER

        clock = HybridClock("a", FakeWall(5))
        clock.hold()
        self.assertEqual(clock.now(), Version(5, 0, "a"))
        self.assertEqual(clock.now_above(Version(5, MAX_COUNTER, "z")), Version(6, 0, "a"))
        self.assertTrue(clock.observe(Version(6, MAX_COUNTER, "z")))
        self.assertEqual(clock.now(), Version(7, 0, "a"))
        self.assertEqual(clock.now(), Version(7, 1, "a"))
        clock.release()

    def test_far_future_version_is_refused_and_counted(self) -> None:
        """A version beyond the allowed skew is refused, counted, and leaves the clock alone."""
        clock = HybridClock("a", FakeWall(1000), max_drift_ms=500)
        self.assertFalse(clock.observe(Version(1501 + 1000, 0, "b")))
        self.assertEqual(clock.refused, 1)
        self.assertLess(clock.now(), Version(2000, 0, ""))
        self.assertTrue(clock.observe(Version(1400, 0, "b")))
        self.assertEqual(clock.refused, 1)

    def test_restore_never_stamps_below_the_saved_high_water_mark(self) -> None:
        """After a restart with the wall clock set back, stamps stay above the saved mark."""
        clock = HybridClock("a", FakeWall(1000))
        clock.restore(5000)
        self.assertGreater(clock.now(), Version(5000, 1 << 30, "zzzz"))

    @given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000), st.integers(0, 50))))
    def test_stamps_are_monotonic_under_any_mix_of_ticks_and_observations(
        self, steps: list[tuple[bool, int, int]]
    ) -> None:
        """Interleaved wall-clock moves and observations never produce a smaller stamp."""
        wall = FakeWall(5000)
        clock = HybridClock("a", wall, max_drift_ms=10**9)
        last = clock.now()
        for observe, ms, counter in steps:
            if observe:
                seen = Version(ms, counter, "b")
                clock.observe(seen)
                stamp = clock.now()
                self.assertGreater(stamp, seen)
            else:
                wall.ms = ms
                stamp = clock.now()
            self.assertGreater(stamp, last)
            last = stamp
