"""services.domain.downloads.registry: throttled progress, ordered events, cancellation, and
what survives a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC
from typing import TYPE_CHECKING, Any

import pytest

from services.domain.downloads import registry as download_registry
from services.domain.downloads.registry import DownloadRegistry, State
from services.kit.events.client import InMemoryBus, RouterPublisher, build_envelope
from services.kit.rpc.errors import FailedPrecondition, NotFound
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as ev
from soulspot.events.v1 import envelope_pb2
from tests.helpers.bus import BusHarness

if TYPE_CHECKING:
    from pathlib import Path

    from google.protobuf.message import Message

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


# -- durability ----------------------------------------------------------------------------------


class _HeldPublisher:
    """A publisher whose router never answers (events stay queued)."""

    def __init__(self) -> None:
        self.attempts = 0

    async def publish(self, payload: Message, **_: Any) -> Any:
        return await self.publish_envelope(build_envelope(payload, source_module="demo"))

    async def publish_envelope(self, envelope: envelope_pb2.EventEnvelope) -> Any:
        self.attempts += 1
        await asyncio.Event().wait()


class _LostAnswerPublisher:
    """A router that stores each event but whose answer never comes back: the module cannot
    tell the event arrived, so it keeps it held."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: list[str] = []

    async def publish(self, payload: Message, **_: Any) -> Any:
        return await self.publish_envelope(build_envelope(payload, source_module="demo"))

    async def publish_envelope(self, envelope: envelope_pb2.EventEnvelope) -> Any:
        self.sent.append(envelope.event_id)
        await self.inner.publish_envelope(envelope)
        await asyncio.Event().wait()


class _Recording:
    """Passes envelopes on and keeps what the router answered for each."""

    def __init__(self, inner: RouterPublisher) -> None:
        self.inner = inner
        self.answers: list[envelope_pb2.EventEnvelope] = []

    async def publish(self, payload: Message, **_: Any) -> Any:
        return await self.publish_envelope(build_envelope(payload, source_module="demo"))

    async def publish_envelope(self, envelope: envelope_pb2.EventEnvelope) -> Any:
        stored = await self.inner.publish_envelope(envelope)
        self.answers.append(stored)
        return stored


async def test_a_new_registry_on_the_same_file_sees_records_and_counters(tmp_path: Path) -> None:
    db = tmp_path / "demo" / "downloads.sqlite3"
    bus = InMemoryBus()
    registry = DownloadRegistry(bus, module="demo", db_path=db)
    done = registry.new(TRACK, "cli")
    done.source = "peer"
    await registry.started_event(done, attempt=1, expected_size=5)
    await registry.started_event(done, attempt=2, expected_size=5)
    await registry.complete(done, references_pb2.FileReference(path="/x", size_bytes=5))
    failed = registry.new(references_pb2.TrackReference(title="F", artist="A"), "cli")
    failed.tried_sources.append("peer")
    await registry.fail(failed, "gone", kind=ev.FAILURE_KIND_NOT_FOUND, can_retry=True)
    running = registry.new(references_pb2.TrackReference(title="R", artist="A"), "web")
    running.source, running.remote_filename = "other", "@@other\\R.flac"
    running.state = State.DOWNLOAD_STATE_QUEUED
    registry.save(running)
    await registry.started_event(running, attempt=1, expected_size=7)
    before = registry.statistics()
    await registry.shutdown()

    again = DownloadRegistry(InMemoryBus(), module="demo", db_path=db)
    assert again.statistics() == before
    assert (before.started, before.completed, before.failed, before.candidate_retries) == (
        2,
        1,
        1,
        1,
    )
    assert before.active == 1
    answer = again.get(done.download_id).to_response()
    assert answer.state == State.DOWNLOAD_STATE_COMPLETED
    assert (answer.file.path, answer.source, answer.track) == ("/x", "peer", TRACK)
    assert abs((answer.started_at.ToDatetime(UTC) - done.started_at).total_seconds()) < 1e-3
    lost = again.get(failed.download_id)
    assert (lost.state, lost.error, lost.tried_sources) == (
        State.DOWNLOAD_STATE_FAILED,
        "gone",
        ["peer"],
    )
    # The unfinished one comes back to the module, with what it needs to follow it again.
    interrupted = await again.recover()
    assert [r.download_id for r in interrupted] == [running.download_id]
    back = interrupted[0]
    assert (back.state, back.source, back.remote_filename, back.expected_size) == (
        State.DOWNLOAD_STATE_QUEUED,
        "other",
        "@@other\\R.flac",
        7,
    )
    assert again.find_active(running.track, "web") is back
    await again.shutdown()


async def test_events_the_router_never_took_are_sent_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "downloads.sqlite3"
    stuck = _HeldPublisher()
    registry = DownloadRegistry(stuck, module="demo", db_path=db)
    record = registry.new(TRACK, "cli")
    await registry.started_event(record, attempt=1)
    await registry.complete(record, references_pb2.FileReference(path="/x", size_bytes=5))
    await registry.shutdown()  # the router never answered: both events are still held
    assert stuck.attempts == 1

    bus = InMemoryBus()
    again = DownloadRegistry(bus, module="demo", db_path=db)
    assert await again.recover() == []
    assert await again.flush()
    assert [e.event_type for e in bus.published] == ["download.started", "download.completed"]
    assert {e.subject for e in bus.published} == {record.download_id}
    await again.shutdown()
    # Sent once: a third start has nothing left to send.
    third_bus = InMemoryBus()
    third = DownloadRegistry(third_bus, module="demo", db_path=db)
    await third.recover()
    assert await third.flush()
    assert third_bus.published == []
    await third.shutdown()


async def test_an_event_sent_again_after_a_restart_keeps_its_id(tmp_path: Path) -> None:
    db = tmp_path / "downloads.sqlite3"
    bus = InMemoryBus()
    lost = _LostAnswerPublisher(bus)
    registry = DownloadRegistry(lost, module="demo", db_path=db)
    record = registry.new(TRACK, "cli")
    await registry.started_event(record, attempt=1)
    await registry.complete(record, references_pb2.FileReference(path="/x", size_bytes=5))
    await registry.shutdown()
    # The bus stored download.started; its answer was lost, so both events are still held.
    (first,) = bus.published
    assert [first.event_id] == lost.sent

    again = DownloadRegistry(bus, module="demo", db_path=db)
    await again.recover()
    assert await again.flush()
    await again.shutdown()
    # Sent again under the same id: stored once, and download.completed after it.
    assert [e.event_type for e in bus.published] == ["download.started", "download.completed"]
    assert bus.published[0].event_id == first.event_id
    assert bus.published[1].event_id not in lost.sent
    # The same envelope published twice more is still the one stored event.
    resent = envelope_pb2.EventEnvelope()
    resent.CopyFrom(first)
    assert (await bus.publish_envelope(resent)).sequence == first.sequence
    assert len(bus.published) == 2


async def test_the_router_stores_a_resent_held_event_once(tmp_path: Path) -> None:
    db = tmp_path / "module" / "downloads.sqlite3"
    async with BusHarness(tmp_path / "router") as harness:
        assert harness.channel is not None
        router = RouterPublisher(harness.channel, source_module="demo", deadline_s=5.0)
        lost = _LostAnswerPublisher(router)
        registry = DownloadRegistry(lost, module="demo", db_path=db)
        record = registry.new(TRACK, "cli")
        await registry.complete(record, references_pb2.FileReference(path="/x", size_bytes=5))
        await registry.shutdown()
        assert len(lost.sent) == 1  # stored by the router, answer lost: still held

        recording = _Recording(router)
        again = DownloadRegistry(recording, module="demo", db_path=db)
        await again.recover()
        assert await again.flush(10.0)
        await again.shutdown()
        (answer,) = recording.answers
        assert answer.event_id == lost.sent[0]
        # The router knew the id: no second download.completed behind the first one.
        response = await harness.publish(answer)
        assert response.duplicate
        assert response.sequence == answer.sequence == 1


async def test_events_held_in_a_file_from_before_envelopes_still_go_out(tmp_path: Path) -> None:
    db = tmp_path / "downloads.sqlite3"
    # The held_events table as earlier versions wrote it: the payload, no envelope.
    with sqlite3.connect(db) as old:
        old.execute(
            "CREATE TABLE held_events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " payload_type TEXT NOT NULL, data BLOB NOT NULL, subject TEXT NOT NULL)"
        )
        payload = ev.DownloadCompleted(
            download_id="demo-1", track=TRACK, file=references_pb2.FileReference(path="/x")
        )
        old.execute(
            "INSERT INTO held_events (payload_type, data, subject) VALUES (?, ?, ?)",
            ("DownloadCompleted", payload.SerializeToString(), "demo-1"),
        )
    old.close()
    bus = InMemoryBus()
    registry = DownloadRegistry(bus, module="demo", db_path=db)
    await registry.recover()
    assert await registry.flush()
    assert bus.payloads("download.completed") == [payload]
    assert bus.published[0].subject == "demo-1"
    # New events in the same (migrated) file keep their envelope.
    record = registry.new(TRACK, "cli")
    await registry.complete(record, references_pb2.FileReference(path="/y"))
    assert await registry.flush()
    await registry.shutdown()
    assert len(bus.envelopes("download.completed")) == 2


async def test_ended_downloads_leave_memory_but_still_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_registry, "CACHE_ENDED", 2)
    registry = DownloadRegistry(InMemoryBus(), module="demo", db_path=tmp_path / "d.sqlite3")
    ids = []
    for n in range(6):
        record = registry.new(references_pb2.TrackReference(title=f"T{n}", artist="A"), "cli")
        await registry.complete(record, references_pb2.FileReference(path=f"/{n}"))
        ids.append(record.download_id)
    assert len(registry.records) <= 3
    assert registry.get(ids[0]).file == references_pb2.FileReference(path="/0")
    assert registry.statistics().completed == 6
    await registry.shutdown()
