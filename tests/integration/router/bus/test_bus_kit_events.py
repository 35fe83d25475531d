from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from services.kit.events.client import EventHandlers, RouterPublisher, Subscriber
from services.kit.rpc import context as ctx
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import completed, wait_for

if TYPE_CHECKING:
    from tests.helpers.bus import BusHarness


def _ready(download_id: str) -> track_pb2.TrackReady:
    return track_pb2.TrackReady(
        track=references_pb2.TrackReference(title="Song", artist="Artist"),
        file=references_pb2.FileReference(path="/x.flac"),
        download_id=download_id,
    )


async def test_handlers_publish_with_causation_and_failures_nack_one_delivery(
    harness: BusHarness,
) -> None:
    assert harness.channel is not None
    soulseek = RouterPublisher(harness.channel, source_module="soulseek")
    router_side = RouterPublisher(harness.channel, source_module="router")
    handlers = EventHandlers()
    calls: dict[str, int] = {}

    @handlers.on("download.completed")
    async def on_completed(payload: Any, envelope: Any) -> None:
        calls[payload.download_id] = calls.get(payload.download_id, 0) + 1
        if payload.download_id == "flaky" and calls["flaky"] == 1:
            raise RuntimeError("first try fails")
        await router_side.publish(_ready(payload.download_id))

    sub = Subscriber(
        harness.channel,
        consumer="pipeline",
        handlers=handlers,
        start=router_pb2.START_POSITION_EARLIEST,
        nack_delay_s=0.05,
    )
    await sub.start()
    try:
        await sub.wait_connected()
        with ctx.bind("corr-1"):
            root = await soulseek.publish(completed("ok"))
            flaky = await soulseek.publish(completed("flaky"))
        await wait_for(lambda: sub.handled == 2, within_s=10)
    finally:
        await sub.stop()
    assert calls == {"ok": 1, "flaky": 2}
    assert sub.failed == 1
    readies = (
        await harness.stub.ListEvents(
            router_pb2.ListEventsRequest(event_types=["track.ready"], oldest_first=True)
        )
    ).events
    by_cause = {e.causation_id: e for e in readies}
    assert set(by_cause) == {root.event_id, flaky.event_id}
    child = by_cause[root.event_id]
    assert child.correlation_id == "corr-1"
    assert child.source_module == "router"
    assert [(h.event_type, h.source_module) for h in child.causation_chain] == [
        ("download.completed", "soulseek")
    ]
    assert child.traceparent.split("-")[1] == root.traceparent.split("-")[1]


async def test_subscriber_skips_an_event_id_it_already_handled(harness: BusHarness) -> None:
    assert harness.channel is not None
    handlers = EventHandlers()
    seen: list[str] = []

    @handlers.on("download.*")
    async def record(payload: Any, envelope: Any) -> None:
        seen.append(envelope.event_id)

    sub = Subscriber(
        harness.channel,
        consumer="idem",
        handlers=handlers,
        start=router_pb2.START_POSITION_EARLIEST,
        ack_timeout_s=0.3,
    )
    published = await RouterPublisher(harness.channel, source_module="folder").publish(
        completed("x")
    )
    # Handled once, then the same event arrives again as a redelivery (lost ack).
    sub.recent.add(published.event_id)
    await sub.start()
    try:
        await sub.wait_connected()
        await wait_for(lambda: harness.bus.consumers["idem"].floor >= 1)
    finally:
        await sub.stop()
    assert seen == []


async def test_subscriber_reconnects_after_the_stream_breaks(harness: BusHarness) -> None:
    assert harness.channel is not None
    handlers = EventHandlers()
    got: list[str] = []

    @handlers.on("download.completed")
    async def record(payload: Any, envelope: Any) -> None:
        got.append(payload.download_id)

    sub = Subscriber(harness.channel, consumer="rc", handlers=handlers, max_backoff_s=0.2)
    publisher = RouterPublisher(harness.channel, source_module="folder")
    await sub.start()
    try:
        await sub.wait_connected()
        for s in list(harness.bus.consumers["rc"].subscriptions):
            s.end()  # the router ends the stream
        await asyncio.sleep(0.05)
        await sub.wait_connected()
        await publisher.publish(completed("after"))
        await wait_for(lambda: got == ["after"], within_s=10)
    finally:
        await sub.stop()
