"""Two router processes on one nats-server (their event log and pipeline runs in JetStream),
modules registered with both: either router shows and routes the same mesh, and a client
given both addresses keeps calling when one router is killed -9."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from services.kit.rpc.channel import open_channel
from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.nats_server import start_nats_server
from tests.helpers.processes import Process, start_module
from tests.helpers.router_cluster import every_router, start_routers

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e

REQUEST = search_pb2.SearchTrackRequest(query="artist - title")
MODULES = ("k-primary", "k-backup")


@pytest.fixture
def routers(tmp_path: Path) -> Iterator[list[Process]]:
    # The routers' mesh CA (start_router's folder): the routers connect with mutual TLS.
    nats = start_nats_server(tmp_path / "nats", pki_dir=tmp_path / "pki")
    try:
        started = start_routers(tmp_path, [nats.url])
        try:
            yield started
        finally:
            for router in started:
                router.stop()
    finally:
        nats.stop()


@pytest.fixture
def modules(tmp_path: Path, routers: list[Process]) -> Iterator[list[Process]]:
    both = every_router(routers)
    started = [
        start_module(tmp_path, name, both, priority=10 - 5 * i) for i, name in enumerate(MODULES)
    ]
    yield started
    for process in started:
        process.stop()


async def _active_modules(router: Process) -> list[str]:
    async with open_channel(router.address, transport=router.client) as channel:
        status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            router_pb2.GetStatusRequest(), timeout=5
        )
    return sorted(m.name for m in status.modules if m.status == module_pb2.MODULE_STATUS_ACTIVE)


async def _until_every_router_shows(routers: list[Process], names: list[str]) -> None:
    async with asyncio.timeout(20):
        while [await _active_modules(r) for r in routers] != [names] * len(routers):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling other processes: no event to wait on


async def test_either_router_shows_the_modules_registered_with_both(
    routers: list[Process], modules: list[Process]
) -> None:
    await _until_every_router_shows(routers, sorted(MODULES))
    # A module that stops is seen going by both routers, each from its own health watch.
    modules[1].kill()
    await _until_every_router_shows(routers, ["k-primary"])


async def test_a_client_with_both_addresses_keeps_calling_when_one_router_dies(
    routers: list[Process], modules: list[Process]
) -> None:
    await _until_every_router_shows(routers, sorted(MODULES))
    both = every_router(routers)
    answered: list[str] = []
    failures: list[str] = []
    async with open_channel(both, transport=routers[0].client) as channel:
        search = search_pb2_grpc.SearchServiceStub(channel)

        async def call() -> None:
            try:
                reply = await search.SearchTrack(REQUEST, timeout=3)
                answered.append(reply.results[0].source)
            except grpc.aio.AioRpcError as err:
                failures.append(f"{err.code().name}: {err.details()}")

        for _ in range(40):
            await call()
        assert failures == []
        routers[0].kill()
        before = len(answered)
        for _ in range(100):
            await call()
    # Only a call in flight on the killed router's connection may fail; every later call
    # goes to the router that is left.
    assert len(failures) <= 1, failures
    assert len(answered) - before >= 99
    assert set(answered) == {"k-primary"}
