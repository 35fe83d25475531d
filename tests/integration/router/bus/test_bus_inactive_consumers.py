"""Consumers that ask for an inactive threshold go away once idle that long (watchers that
name a fresh consumer each run); the others stay."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from services.kit.events.client import EventHandlers, Subscriber
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import (
    BusHarness,
    RawSubscriber,
    completed,
    envelope,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

NEW = router_pb2.START_POSITION_NEW


async def _gone(harness: BusHarness, name: str) -> bool:
    return name not in harness.bus.consumers and await harness.bus.store.load_consumer(name) is None


async def test_an_idle_consumer_goes_after_its_threshold_and_others_stay(
    harness: BusHarness,
) -> None:
    async with (
        RawSubscriber(harness.stub, "watch", ["*"], start=NEW, inactive_threshold_s=0.3) as w,
        RawSubscriber(harness.stub, "keeper", ["*"], start=NEW) as k,
    ):
        await harness.publish(envelope(completed("d1")))
        await w.next()
        await k.next()
    await wait_for(lambda: _gone(harness, "watch"), within_s=3)
    await asyncio.sleep(0.5)
    if harness.settings.backend == "sqlite":
        # On JetStream a consumer without subscribers leaves the router's memory (any router
        # may serve it next); it stays in the store and in the status below.
        assert "keeper" in harness.bus.consumers
    assert await harness.bus.store.load_consumer("keeper") is not None
    info = {c.name for c in harness.bus.consumers_info()}
    assert info == {"keeper"}


async def test_a_watcher_back_within_its_threshold_keeps_its_place(harness: BusHarness) -> None:
    async with RawSubscriber(
        harness.stub, "watch", ["*"], start=NEW, inactive_threshold_s=0.6
    ) as first:
        await harness.publish(envelope(completed("d1")))
        await first.next()
        await wait_for(lambda: harness.bus.consumers["watch"].floor == 1)  # acked
    await asyncio.sleep(0.2)
    async with RawSubscriber(
        harness.stub, "watch", ["*"], start=NEW, inactive_threshold_s=0.6
    ) as again:
        assert again.acked_sequence == 1  # its position, not a fresh start
        await asyncio.sleep(0.8)  # past the threshold, but subscribed all along
        assert "watch" in harness.bus.consumers
        await harness.publish(envelope(completed("d2")))
        got = await again.next()
        assert got.event.sequence == 2
    await wait_for(lambda: _gone(harness, "watch"), within_s=3)


async def test_idle_consumers_left_by_a_stopped_router_go_after_a_restart(tmp_path: Path) -> None:
    async with BusHarness(tmp_path) as harness:
        async with RawSubscriber(
            harness.stub, "left-idle", ["*"], start=NEW, inactive_threshold_s=0.3
        ):
            pass
        # Still subscribed when the router stops: idle only from the restart on.
        held = RawSubscriber(harness.stub, "held", ["*"], start=NEW, inactive_threshold_s=0.5)
        await held.__aenter__()
        await wait_for(lambda: "held" in harness.bus.consumers)
        await asyncio.sleep(0.1)  # the lazy "attached" mark is committed by the stop anyway
    await held.close()
    await asyncio.sleep(0.4)
    async with BusHarness(tmp_path) as restarted:
        assert await restarted.bus.store.load_consumer("left-idle") is None
        assert await restarted.bus.store.load_consumer("held") is not None
        await wait_for(lambda: _gone(restarted, "held"), within_s=3)


async def test_the_kit_subscriber_asks_for_its_threshold(harness: BusHarness) -> None:
    handlers = EventHandlers()
    seen: list[str] = []

    @handlers.on("download.completed")
    async def on_completed(_payload: Any, envelope: Any) -> None:
        seen.append(envelope.event_id)

    assert harness.channel is not None
    sub = Subscriber(
        harness.channel, consumer="cli-get-1", handlers=handlers, inactive_threshold_s=0.3
    )
    await sub.start()
    await sub.wait_connected()
    await harness.publish(envelope(completed("d1")))
    await wait_for(lambda: len(seen) == 1)
    assert harness.bus.consumers["cli-get-1"].inactive_s == 0.3
    await sub.stop()
    await wait_for(lambda: _gone(harness, "cli-get-1"), within_s=3)
