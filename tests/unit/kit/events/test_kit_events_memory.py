from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.kit.events.client import EventHandlers, InMemoryBus, current_event, unpack_payload
from services.kit.rpc.errors import InvalidArgument
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, track_pb2


def _completed(download_id: str = "d") -> download_pb2.DownloadCompleted:
    return download_pb2.DownloadCompleted(
        download_id=download_id,
        track=references_pb2.TrackReference(title="t", artist="a"),
        file=references_pb2.FileReference(path="/p"),
    )


async def test_in_memory_bus_records_and_dispatches_with_causation() -> None:
    handlers = EventHandlers()
    bus = InMemoryBus(source_module="soulseek", handlers=handlers)
    seen: list[str] = []

    @handlers.on("download.completed")
    async def on_completed(payload: Any, envelope: Any) -> None:
        assert current_event.get() is envelope
        seen.append(payload.download_id)
        await bus.publish(
            track_pb2.TrackReady(track=payload.track, file=payload.file, download_id="d")
        )

    @handlers.on("track.*")
    async def broken(payload: Any, envelope: Any) -> None:
        raise RuntimeError("handler bug")

    root = await bus.publish(_completed(), subject="d")
    assert root.event_type == "download.completed"
    assert root.schema_version == "1.0.0"
    assert root.source_module == "soulseek"
    assert root.event_id
    assert root.correlation_id
    assert root.traceparent
    await bus.drain()
    assert seen == ["d"]
    (ready,) = bus.envelopes("track.ready")
    assert ready.causation_id == root.event_id
    assert [h.event_id for h in ready.causation_chain] == [root.event_id]
    assert ready.correlation_id == root.correlation_id
    assert [p.download_id for p in bus.payloads("download.completed")] == ["d"]
    assert len(bus.failures) == 1
    assert handlers.event_types == ["download.completed", "track.*"]


async def test_in_memory_bus_refuses_what_the_router_refuses() -> None:
    bus = InMemoryBus()
    with pytest.raises(InvalidArgument, match="track"):
        await bus.publish(download_pb2.DownloadCompleted(download_id="x"))
    with pytest.raises(InvalidArgument, match="not an event payload"):
        await bus.publish(references_pb2.TrackReference(title="t", artist="a"))
    assert bus.published == []


async def test_in_memory_bus_delivers_one_event_of_a_key_at_a_time_in_order() -> None:
    handlers = EventHandlers()
    bus = InMemoryBus(handlers=handlers)
    log: list[str] = []

    @handlers.on("download.completed")
    async def slow(payload: Any, envelope: Any) -> None:
        log.append(f"start {payload.download_id}")
        if payload.download_id == "a1":
            await asyncio.sleep(0.05)
            raise RuntimeError("a1 fails; a2 still goes after it")
        await asyncio.sleep(0.01)
        log.append(f"end {payload.download_id}")

    await bus.publish(_completed("a1"), ordering_key="a")
    await bus.publish(_completed("a2"), ordering_key="a")
    await bus.publish(_completed("b1"))
    await bus.drain()
    # b1 (no key) does not wait for a1; a2 starts only once a1 is over.
    assert log.index("start b1") < log.index("start a2")
    assert log.index("start a2") > log.index("start a1")
    assert log[-2:] == ["start a2", "end a2"]
    failed = [unpack_payload(envelope) for envelope, _ in bus.failures]
    assert [p.download_id for p in failed if isinstance(p, download_pb2.DownloadCompleted)] == [
        "a1"
    ]
    assert len(failed) == 1
