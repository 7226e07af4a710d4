"""The `streams` gauge of an origin worker leaves out only its mirrors that have a stream:
a mirror still connecting to the owner (no stream yet) made a worker owning nothing report -1
and the merged node total one short."""

from __future__ import annotations

from types import SimpleNamespace

from origin.server import Origin
from origin.workers import Mirror


def test_a_connecting_mirror_does_not_make_the_stream_count_negative():
    workers = SimpleNamespace(mirrors={})
    mirror = Mirror(workers, ("live", "a"), owner=1)  # as OriginWorkers.mirror makes it
    workers.mirrors[("live", "a")] = mirror  # ... before its first event: mirror.stream is None
    origin = SimpleNamespace(registry=[], workers=workers)  # this worker owns nothing
    assert Origin.stream_count(origin) == 0
    mirror.stream = object()  # connected: its stream is in the registry
    origin.registry = [mirror.stream, object()]  # and one stream of this worker's own
    assert Origin.stream_count(origin) == 1
