"""services.kit.download_registry: throttled progress, ordered events, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from services.kit.download_registry import DownloadRegistry, State
from services.kit.errors import FailedPrecondition, NotFound
from services.kit.events import InMemoryBus
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as ev

TRACK = references_pb2.TrackReference(title="T", artist="A")


async def test_progress_is_throttled_and_never_repeated() -> None:
    bus = InMemoryBus()
    registry = DownloadRegistry(bus, module="demo", progress_interval_s=3600)
    record = registry.new(TRACK, "cli")
    assert await registry.progress(record, transferred=10, total=100)
    # Within the interval: not published, but GetDownload still sees the new percentage.
    assert not await registry.progress(record, transferred=50, total=100)
    assert record.percent == 50.0
    assert await registry.progress(record, transferred=60, total=100, force=True)
    # The same numbers twice are never worth an event, forced or not.
    assert not await registry.progress(record, transferred=60, total=100, force=True)
    await registry.flush()
    assert [p.bytes_transferred for p in bus.payloads("download.progress")] == [10, 60]


async def test_events_keep_their_order_and_counters_add_up() -> None:
    bus = InMemoryBus()
    registry = DownloadRegistry(bus, module="demo")
    record = registry.new(TRACK, "cli")
    record.source = "peer"
    await registry.started_event(record, attempt=1)
    await registry.started_event(record, attempt=2)
    await registry.complete(record, references_pb2.FileReference(path="/x", size_bytes=5))
    assert await registry.flush()
    assert [e.event_type for e in bus.published] == [
        "download.started",
        "download.started",
        "download.completed",
    ]
    assert all(e.subject == record.download_id for e in bus.published)
    stats = registry.statistics()
    assert (stats.started, stats.completed, stats.candidate_retries, stats.bytes_received) == (
        1,
        1,
        1,
        5,
    )
    assert registry.get(record.download_id).to_response().state == State.DOWNLOAD_STATE_COMPLETED


async def test_cancel_stops_the_task_and_publishes_once() -> None:
    bus = InMemoryBus()
    registry = DownloadRegistry(bus, module="demo")
    record = registry.new(TRACK, "cli")
    record.task = asyncio.create_task(asyncio.sleep(3600))
    assert await registry.cancel(record.download_id) == State.DOWNLOAD_STATE_CANCELLED
    assert record.task.cancelled()
    # Cancelling again answers the same state; nothing more is published.
    assert await registry.cancel(record.download_id) == State.DOWNLOAD_STATE_CANCELLED
    failed = bus.payloads("download.failed")
    assert [f.kind for f in failed] == [ev.FAILURE_KIND_CANCELLED]
    with pytest.raises(NotFound):
        await registry.cancel("nope")
    done = registry.new(TRACK, "other")
    await registry.complete(done, references_pb2.FileReference(path="/y"))
    with pytest.raises(FailedPrecondition):
        await registry.cancel(done.download_id)
