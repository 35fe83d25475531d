"""Subscriber.run reconnects through the kit's backoff: its waits grow while the router is
away."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.events.client import EventHandlers, Subscriber
from services.kit.rpc.channel import open_channel
from services.kit.support.backoff import BackoffPolicy
from tests.helpers.recorded_waits import (
    RecordedWaits,
    assert_follows,
    unreachable_address,
)

if TYPE_CHECKING:
    import pytest


async def test_reconnect_waits_grow_while_the_router_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=6)
    handlers = EventHandlers()

    @handlers.on("track.imported")
    async def ignore(envelope: object) -> None:
        return None

    async with open_channel(unreachable_address(), interceptors=()) as channel:
        subscriber = Subscriber(channel, consumer="c", handlers=handlers, max_backoff_s=2.0)
        await subscriber.start()
        try:
            waits = await recorded.wait_for()
        finally:
            await subscriber.stop()
    assert not subscriber.connected.is_set()
    # 0.1, 0.2, 0.4, 0.8, 1.6, then the 2 s cap, each drawn from its upper half.
    assert_follows(waits, BackoffPolicy(initial_s=0.1, cap_s=2.0, jitter="equal"))
    assert max(waits) > 1.0
