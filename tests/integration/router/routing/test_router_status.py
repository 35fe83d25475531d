from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpc_health.v1 import health_pb2

from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.router import SEARCH

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import grpc

    from router.app import RouterApp
    from soulspot.router.v1 import registry_pb2_grpc, status_pb2_grpc

GRPCURL = Path(sys.executable).with_name("grpcurl")
SEARCH_SERVICE = "soulspot.capabilities.v1.SearchService"


async def test_status_lists_modules_and_ordered_providers(
    module: Callable[..., Awaitable[Any]], status_stub: status_pb2_grpc.StatusServiceAsyncStub
) -> None:
    await module("low", 1)
    high = await module("high", 9)
    await high.server.set_status("", False, "down for test")
    for _ in range(100):
        status = await status_stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
        modules = {m.name: m for m in status.modules}
        if modules["high"].status == module_pb2.MODULE_STATUS_INACTIVE:
            break
        await asyncio.sleep(0.02)
    assert modules["high"].reason.startswith("health reports NOT_SERVING")
    assert modules["low"].status == module_pb2.MODULE_STATUS_ACTIVE
    assert modules["low"].dynamic
    assert modules["low"].breaker == "closed"
    caps = {c.name: c for c in status.capabilities}
    search = caps["search.track"]
    assert search.method == SEARCH
    assert [(p.module, p.routable) for p in search.providers] == [("low", True), ("high", False)]
    assert search.available
    assert not caps["import.track"].available
    assert status.started_at.seconds > 0


async def test_routing_table_streams_at_once_and_on_every_change(
    module: Callable[..., Awaitable[Any]], registry_stub: registry_pb2_grpc.RegistryServiceAsyncStub
) -> None:
    call = registry_stub.WatchRoutingTable(router_pb2.WatchRoutingTableRequest(), timeout=10)
    stream = call.__aiter__()
    first = await stream.__anext__()
    routes = {r.capability: r for r in first.routes}
    assert routes["search.track"].method == SEARCH
    assert not routes["search.track"].providers
    assert first.ttl.seconds == 5
    fake = await module("mod", 4)
    while True:
        table = await stream.__anext__()
        providers = {r.capability: r for r in table.routes}["search.track"].providers
        if providers:
            break
    assert table.version > first.version
    assert [(p.module, p.address, p.priority) for p in providers] == [("mod", fake.address, 4)]
    await fake.server.stop(0)
    while True:
        table = await stream.__anext__()
        if not {r.capability: r for r in table.routes}["search.track"].providers:
            break
    call.cancel()


async def test_router_health_reports_capability_services(
    module: Callable[..., Awaitable[Any]], channel: grpc.aio.Channel
) -> None:
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )

    async def serving() -> bool:
        answer = await check(health_pb2.HealthCheckRequest(service=SEARCH_SERVICE), timeout=5)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    assert not await serving()
    fake = await module("mod", 1)
    for _ in range(100):
        if await serving():
            break
        await asyncio.sleep(0.02)
    assert await serving()
    await fake.server.stop(0)
    for _ in range(200):
        if not await serving():
            break
        await asyncio.sleep(0.02)
    assert not await serving()


async def _grpcurl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_reflection_lists_capability_services_and_grpcurl_calls_through_router(
    router: RouterApp, module: Callable[..., Awaitable[Any]]
) -> None:
    await module("mod", 1)
    listed = (await _grpcurl("-plaintext", router.address, "list")).split()
    for service in router.catalog.services:
        assert service in listed
    # The router's own services, and the deprecated RouterService kept for existing callers.
    for service in ("RegistryService", "StatusService", "RouterService"):
        assert f"soulspot.router.v1.{service}" in listed
    status = await _grpcurl(
        "-plaintext", router.address, "soulspot.router.v1.StatusService/GetStatus"
    )
    assert "mod" in [m["name"] for m in json.loads(status)["modules"]]
    health = await _grpcurl(
        "-plaintext",
        "-d",
        '{"service": "soulspot.router.v1.RegistryService"}',
        router.address,
        "grpc.health.v1.Health/Check",
    )
    assert json.loads(health)["status"] == "SERVING"
    reply = await _grpcurl(
        "-plaintext",
        "-d",
        '{"query": "by name"}',
        router.address,
        f"{SEARCH_SERVICE}/SearchTrack",
    )
    assert json.loads(reply)["results"][0]["source"] == "mod"
