"""GetStatus with the bus, on either store: the log's last sequence and its dead letters as
the store holds them, every consumer by name, and the name of the router that answered."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from router.api.status_service import StatusServicer, answering_name
from router.routing.capabilities import load_catalog
from router.routing.registry import Registry
from router.routing.warnings import WarningBoard
from router.settings import RouterSection
from services.kit.observability.metrics import MeshMetrics
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import BusHarness, RawSubscriber, bus_settings, completed, envelope, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=["sqlite", "jetstream"])
async def harness(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[BusHarness]:
    async with BusHarness(tmp_path, bus_settings(backend=request.param)) as h:
        yield h


def _status_of(harness: BusHarness) -> StatusServicer:
    catalog = load_catalog()
    registry = Registry(catalog, RouterSection(), MeshMetrics())
    servicer = StatusServicer(registry, catalog, WarningBoard(), bus=harness.bus)
    servicer.answered_by = "router-a:50051"
    return servicer


async def _status(servicer: StatusServicer) -> router_pb2.GetStatusResponse:
    # GetStatus reads nothing of its call's context.
    return await servicer.GetStatus(router_pb2.GetStatusRequest(), None)  # type: ignore[arg-type]


async def test_status_counts_the_stores_dead_letters_and_names_the_log_end(
    harness: BusHarness,
) -> None:
    servicer = _status_of(harness)
    async with RawSubscriber(
        harness.stub, "worker", ["download.*"], auto_ack=False, max_attempts=1
    ) as sub:
        for download_id in ("ok", "bad"):
            await harness.publish(envelope(completed(download_id)))
        first, second = await sub.next(), await sub.next()
        sub.ack(first.delivery_id)
        sub.nack(second.delivery_id, "cannot handle it")

        async def parked() -> bool:
            return (await _status(servicer)).dead_letters == 1

        await wait_for(parked)
        status = await _status(servicer)
    assert status.last_sequence == await harness.bus.store.last_sequence() == 2
    assert [c.name for c in status.consumers] == ["worker"]
    assert status.answered_by == "router-a:50051"


def test_a_router_on_every_interface_is_named_by_its_host() -> None:
    host = socket.gethostname()
    assert answering_name("0.0.0.0:50051") == f"{host}:50051"
    assert answering_name("[::]:50051") == f"{host}:50051"
    assert answering_name("127.0.0.1:50052") == "127.0.0.1:50052"
    assert answering_name("router-b:50051") == "router-b:50051"
