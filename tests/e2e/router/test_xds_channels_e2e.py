"""The kit's capability channels against a real router and modules, over mutual TLS: straight
to modules over xDS when the router serves it (and still once the router is gone), through the
router's proxy when it does not."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from services.kit.rpc.channel import wait_for_ready
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.capability_caller import CallerProcess
from tests.helpers.processes import Process, free_port, start_module, start_router

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.e2e


@pytest.fixture
def processes() -> Iterator[list[Process | CallerProcess]]:
    started: list[Process | CallerProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


def _router(tmp: Path, started: list[Process | CallerProcess], **env: str) -> Process:
    router = start_router(tmp, free_port(), **env)
    started.append(router)
    asyncio.run(wait_for_ready(router.address, 20, transport=router.client))
    return router


def _until_routed(router: Process, *names: str) -> None:
    """Until the router routes search.track to exactly these modules, in this order."""

    async def check() -> None:
        from services.kit.rpc.channel import open_channel

        async with open_channel(router.address, transport=router.client) as channel:
            stub = status_pb2_grpc.StatusServiceStub(channel)
            async with asyncio.timeout(20):
                while True:
                    status = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
                    route = {c.name: c for c in status.capabilities}["search.track"]
                    if [p.module for p in route.providers if p.routable] == list(names):
                        return
                    await asyncio.sleep(0.05)

    asyncio.run(check())


def _until(caller: CallerProcess, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Searches until one answer is what the test waits for (20 s at most)."""
    ends = time.monotonic() + 20
    answer = caller.ask("search")
    while not wanted(answer):
        assert time.monotonic() < ends, answer
        answer = caller.ask("search")
    return answer


def test_calls_go_straight_to_the_module_and_outlive_the_router(
    tmp_path: Path, processes: list[Process | CallerProcess]
) -> None:
    router = _router(tmp_path, processes)
    primary = start_module(tmp_path, "k-primary", router.address, priority=10)
    processes.append(primary)
    processes.append(start_module(tmp_path, "k-backup", router.address, priority=5))
    _until_routed(router, "k-primary", "k-backup")
    caller = CallerProcess.start(router.address, router.pki_dir)
    processes.append(caller)
    assert caller.ready["xds"], "the router serves xDS: the channels must use it"
    answer = _until(caller, lambda a: a["ok"])
    # The top priority answers, and not through the router (whose proxy names the module).
    assert answer == {
        "ok": True,
        "source": "k-primary",
        "xds": True,
        "via_router": False,
        "context_carried": True,
    }

    router.kill()
    for _ in range(5):
        assert caller.ask("search") == answer, "calls stop when the router is gone"

    # With the router gone, gRPC fails over between the priorities it was given by itself.
    primary.kill()
    answer = _until(caller, lambda a: a.get("source") == "k-backup")
    assert answer["ok"]
    assert not answer["via_router"]


@pytest.mark.parametrize(
    ("router_env", "caller_xds"),
    [({"SOULSPOT_ROUTER__XDS__ENABLED": "false"}, True), ({}, False)],
    ids=["router-serves-no-xds", "caller-turned-xds-off"],
)
def test_calls_go_through_the_routers_proxy_without_xds_on_either_side(
    tmp_path: Path,
    processes: list[Process | CallerProcess],
    router_env: dict[str, str],
    caller_xds: bool,
) -> None:
    router = _router(tmp_path, processes, **router_env)
    processes.append(start_module(tmp_path, "k-primary", router.address, priority=10))
    _until_routed(router, "k-primary")
    caller = CallerProcess.start(router.address, router.pki_dir, xds=caller_xds)
    processes.append(caller)
    assert not caller.ready["xds"]
    answer = _until(caller, lambda a: a["ok"])
    assert answer == {
        "ok": True,
        "source": "k-primary",
        "xds": False,
        "via_router": True,
        "context_carried": True,
    }
