"""A publish that cannot complete (no router) does not hold the call, and is not lost early."""

from __future__ import annotations

import asyncio
from typing import Any

from services.kit.events.background_publish import Outbox
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2
from tests.helpers.module_checks import make_bus


class StuckPublisher:
    """Like the runtime's publisher while the router is down: retries until told to stop."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def publish(self, payload: Any, **kwargs: Any) -> Any:
        self.started += 1
        await self.release.wait()
        return None

    async def publish_envelope(self, envelope: Any) -> Any:
        self.started += 1
        await self.release.wait()
        return envelope


async def test_the_call_goes_on_while_the_event_waits() -> None:
    stuck = StuckPublisher()
    outbox = Outbox(stuck, inline_wait_s=0.05)
    await outbox.publish(track_pb2.MetadataEnriched())
    assert stuck.started == 1
    assert outbox.pending == 1  # still trying in the background
    stuck.release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert outbox.pending == 0


async def test_a_healthy_publisher_is_awaited_inline() -> None:
    bus = make_bus()
    outbox = Outbox(bus)
    event = track_pb2.MetadataEnriched(
        track=references_pb2.TrackReference(title="T", artist="A"),
        file=references_pb2.FileReference(path="/x.flac"),
    )
    await outbox.publish(event, subject="/x.flac")
    assert len(bus.payloads("metadata.enriched")) == 1
    assert outbox.pending == 0


async def test_close_cancels_what_is_left() -> None:
    stuck = StuckPublisher()
    outbox = Outbox(stuck, inline_wait_s=0.01)
    await outbox.publish(track_pb2.MetadataEnriched())
    await outbox.close()
    assert outbox.pending == 0
