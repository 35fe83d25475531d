"""DirectClient rewatches the routing table through the kit's backoff: its waits grow while
the router is away, and calls meanwhile have no fresh table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.rpc.direct import DirectClient
from services.kit.support.backoff import BackoffPolicy
from tests.helpers.recorded_waits import (
    RecordedWaits,
    assert_follows,
    unreachable_address,
)

if TYPE_CHECKING:
    import pytest


async def test_table_watch_waits_grow_while_the_router_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RecordedWaits.install(monkeypatch, wanted=7)
    async with DirectClient(unreachable_address()) as client:
        waits = await recorded.wait_for()
        assert not client.fresh
    # 0.1, 0.2, 0.4, 0.8, 1.6, then the 2 s cap, each drawn from its upper half.
    assert_follows(waits, BackoffPolicy(initial_s=0.1, cap_s=2.0, jitter="equal"))
    assert waits[-1] >= 1.0
