"""xDS with several routers, over mutual TLS: the bootstrap lists every router, and a client
whose first router is dead before it starts takes its routes from the next one and calls the
module straight, both a plain gRPC client and the kit's capability channels."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from services.kit.rpc.channel import open_channel, wait_for_ready
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.capability_caller import CallerProcess
from tests.helpers.processes import Process, free_port, start_module, start_router
from tests.helpers.xds_clients import bootstrap, xds_calls

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e

ROUTED_DEADLINE_S = 20.0


@pytest.fixture
def processes() -> Iterator[list[Process | CallerProcess]]:
    started: list[Process | CallerProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


def _routers(tmp: Path, started: list[Process | CallerProcess]) -> list[Process]:
    """Two routers of one mesh CA, each with its own state, serving xDS at once."""
    routers = []
    for index in range(2):
        router = start_router(
            tmp,
            free_port(),
            SOULSPOT_STATE_DIR=str(tmp / f"state-{index}"),
            SOULSPOT_ROUTER__HTTP_ADDRESS="off",
            SOULSPOT_ROUTER__XDS__WARMUP_S="0",
        )
        started.append(router)
        asyncio.run(wait_for_ready(router.address, 20, transport=router.client))
        routers.append(router)
    return routers


def _until_routed(router: Process, module: str) -> None:
    """Until `router` routes search.track to `module`."""

    async def check() -> None:
        async with open_channel(router.address, transport=router.client) as channel:
            stub = status_pb2_grpc.StatusServiceStub(channel)
            async with asyncio.timeout(ROUTED_DEADLINE_S):
                while True:
                    status = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
                    route = {c.name: c for c in status.capabilities}.get("search.track")
                    if route and [p.module for p in route.providers if p.routable] == [module]:
                        return
                    await asyncio.sleep(0.05)

    asyncio.run(check())


def _mesh_with_first_router_dead(
    tmp: Path, started: list[Process | CallerProcess]
) -> tuple[str, Process]:
    """Two routers, a module registered with both, then the first router killed (kill -9).
    Returns the routers' address setting (first, second) and the second router."""
    first, second = _routers(tmp, started)
    both = f"{first.address},{second.address}"
    started.append(start_module(tmp, "k-primary", both, priority=10))
    _until_routed(second, "k-primary")
    first.kill()
    return both, second


def test_a_client_whose_first_router_is_dead_calls_the_module_through_the_second(
    tmp_path: Path, processes: list[Process | CallerProcess]
) -> None:
    both, second = _mesh_with_first_router_dead(tmp_path, processes)
    assert second.pki_dir is not None
    result: dict[str, Any] = asyncio.run(
        xds_calls(bootstrap(both, second.pki_dir), "--calls=10", pki_dir=second.pki_dir)
    )
    assert result["ok"] == 10, result
    # Answered by the module itself: the xDS route, not a router's proxy (which is not
    # reachable by an xds:/// target at all).
    assert result["by"] == {"k-primary": 10}


def test_the_kits_channels_use_xds_from_the_second_router_when_the_first_is_dead(
    tmp_path: Path, processes: list[Process | CallerProcess]
) -> None:
    both, second = _mesh_with_first_router_dead(tmp_path, processes)
    caller = CallerProcess.start(both, second.pki_dir)
    processes.append(caller)
    assert caller.ready["xds"], "the second router serves xDS: the channels must use it"
    ends = time.monotonic() + ROUTED_DEADLINE_S
    answer = caller.ask("search")
    while not answer["ok"]:
        assert time.monotonic() < ends, answer
        answer = caller.ask("search")
    assert answer["source"] == "k-primary"
    assert answer["xds"] is True
    assert answer["via_router"] is False, "straight to the module, not through a proxy"
