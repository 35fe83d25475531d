"""Publishes that arrive together (which the JetStream store sends as one batch) are each
answered on their own, on both stores: a refused event fails only its own publish, with its
field details, and a repeated event is answered with its first copy's sequence."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from services.kit.rpc.errors import InvalidArgument, from_rpc_error
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import BusHarness, bus_settings, completed, envelope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=["sqlite", "jetstream"])
async def either_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[BusHarness]:
    async with BusHarness(tmp_path, bus_settings(backend=request.param)) as h:
        yield h


async def test_concurrent_publishes_are_each_answered_on_their_own(
    either_store: BusHarness,
) -> None:
    harness = either_store
    goods = [envelope(completed(f"d{n}")) for n in range(5)]
    bad = envelope(download_pb2.DownloadCompleted(download_id="no-track"))
    calls = [*goods, bad, goods[0]]
    outcomes = await asyncio.gather(*(harness.publish(e) for e in calls), return_exceptions=True)
    refused = outcomes[5]
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = from_rpc_error(refused)
    assert isinstance(err, InvalidArgument)
    details = err.detail(error_details_pb2.BadRequest)
    assert details is not None
    assert "event.payload.track" in {v.field for v in details.field_violations}
    answers = [o for o in outcomes[:5] if isinstance(o, router_pb2.PublishResponse)]
    assert len(answers) == 5
    assert not any(a.duplicate for a in answers[1:])
    assert len({a.sequence for a in answers}) == 5
    again = outcomes[6]
    assert isinstance(again, router_pb2.PublishResponse)
    # The two copies of goods[0] race: whichever is stored first, the other is its duplicate.
    assert sorted([answers[0].duplicate, again.duplicate]) == [False, True]
    assert again.sequence == answers[0].sequence
    listed = await harness.stub.ListEvents(router_pb2.ListEventsRequest(oldest_first=True))
    stored = {e.event_id: e.sequence for e in listed.events}
    assert stored == {e.event_id: a.sequence for e, a in zip(goods, answers, strict=True)}
