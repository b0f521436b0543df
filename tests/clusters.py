"""Simulated clusters for tests, settled first and checked when the test ends."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from distkv.testing import SimulatedCluster


def settled_cluster(case: SynchronousTestCase, size: int = 3,
                    **options: object) -> SimulatedCluster:
    """A cluster of ``size`` nodes that has settled; stopped after ``case``,
    which then fails if a delayed call was left behind."""
    cluster = SimulatedCluster(size, **options)  # type: ignore[arg-type]
    cluster.settle()

    def stop() -> None:
        cluster.stop()
        case.assertEqual(cluster.net.getDelayedCalls(), [])

    case.addCleanup(stop)
    return cluster
