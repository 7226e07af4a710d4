"""The cluster alone: every node healthy, every canary playing (the suite's reference)."""

from __future__ import annotations

import time

from tests.robustness.conftest import Cluster


def test_quiet_cluster_is_healthy(cluster: Cluster) -> None:
    since = time.monotonic()
    cluster.wait_frames(3)
    cluster.check(since)
