"""RouterRegistration reconnects through the kit's backoff: its waits grow while the router
is away."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.module.registration import RouterRegistration
from services.kit.support.backoff import BackoffPolicy
from soulspot.router.v1 import router_pb2
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
    registration = RouterRegistration(
        unreachable_address(),
        router_pb2.ModuleAnnouncement(name="demo"),
        initial_backoff=0.1,
        max_backoff=1.0,
    )
    await registration.start()
    try:
        waits = await recorded.wait_for()
    finally:
        await registration.stop()
    assert not registration.connected
    # 0.1, 0.2, 0.4, 0.8, then the 1.0 s cap, each drawn from its upper half.
    assert_follows(waits, BackoffPolicy(initial_s=0.1, cap_s=1.0, jitter="equal"))
    assert max(waits) > 0.5
