from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from router.settings import StaticCapability, StaticModule
from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import from_rpc_error
from services.kit.rpc.server import KitServer
from soulspot.capabilities.v1 import search_pb2
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.router import eventually, router_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from router.app import RouterApp
    from soulspot.capabilities.v1 import search_pb2_grpc
    from soulspot.router.v1 import event_bus_pb2_grpc, registry_pb2_grpc, router_pb2_grpc

ACTIVE = module_pb2.MODULE_STATUS_ACTIVE
INACTIVE = module_pb2.MODULE_STATUS_INACTIVE
REQUEST = search_pb2.SearchTrackRequest(query="q")


async def _register(
    stub: registry_pb2_grpc.RegistryServiceAsyncStub | router_pb2_grpc.RouterServiceAsyncStub,
    *requests: router_pb2.RegisterRequest,
) -> grpc.aio.AioRpcError:
    async def send() -> AsyncIterator[router_pb2.RegisterRequest]:
        for request in requests:
            yield request
        await asyncio.sleep(5)

    call = stub.Register(send(), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


def _announce(name: str, address: str, *caps: str) -> router_pb2.RegisterRequest:
    return router_pb2.RegisterRequest(
        announce=router_pb2.ModuleAnnouncement(
            name=name,
            address=address,
            capabilities=[router_pb2.CapabilityRegistration(capability=c) for c in caps],
        )
    )


def _violations(err: grpc.aio.AioRpcError) -> list[str]:
    detail = from_rpc_error(err).detail(error_details_pb2.BadRequest)
    assert detail is not None
    return [v.field for v in detail.field_violations]


async def test_bad_announcements_are_refused_with_field_violations(
    registry_stub: registry_pb2_grpc.RegistryServiceAsyncStub,
) -> None:
    err = await _register(registry_stub, _announce("m", "nohostport", "search.track"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(err) == ["address"]
    err = await _register(registry_stub, _announce("m", "127.0.0.1:1", "teleport.track"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(err) == ["capabilities[0].capability"]
    assert "teleport.track" in (err.details() or "")
    err = await _register(registry_stub, _announce("", "127.0.0.1:1"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(err) == ["name"]
    heartbeat = router_pb2.RegisterRequest(heartbeat=router_pb2.Heartbeat())
    err = await _register(registry_stub, heartbeat)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_duplicate_live_name_is_already_exists(
    module: Callable[..., Awaitable[Any]],
    registry_stub: registry_pb2_grpc.RegistryServiceAsyncStub,
    router_stub: router_pb2_grpc.RouterServiceAsyncStub,
) -> None:
    fake = await module("dup", 1)
    # The same refusal through RegistryService and the deprecated RouterService: one Register.
    for stub in (registry_stub, router_stub):
        err = await _register(stub, _announce("dup", fake.address, "search.track"))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        assert _violations(err) == ["name"]


async def test_new_module_is_active_at_once_and_inactive_when_its_stream_closes(
    router: RouterApp,
    module: Callable[..., Awaitable[Any]],
    search: search_pb2_grpc.SearchServiceAsyncStub,
) -> None:
    fake = await module("fresh", 1)
    assert fake.registration.registered.status == ACTIVE
    # The very first call after registration is routed: "unknown" never blocks it.
    assert (await search.SearchTrack(REQUEST, timeout=5)).results[0].source == "fresh"
    await fake.registration.stop()
    entry = router.registry.get("fresh")
    assert entry is not None
    await eventually(lambda: entry.status == INACTIVE, timeout=2)
    assert entry.reason == "registration stream closed"
    # The name is free again once the old registration is gone.
    await fake.register(router.address)
    assert router.registry.get("fresh").status == ACTIVE  # type: ignore[union-attr]


async def test_health_flips_follow_the_watch(
    router: RouterApp, module: Callable[..., Awaitable[Any]]
) -> None:
    fake = await module("flip", 1)
    entry = router.registry.get("flip")
    assert entry is not None
    await fake.server.set_status("", False, "upstream down")
    await eventually(lambda: entry.status == INACTIVE)
    assert "NOT_SERVING" in entry.reason
    await fake.server.set_status("", True)
    await eventually(lambda: entry.status == ACTIVE)


async def test_killed_module_goes_inactive(
    router: RouterApp, module: Callable[..., Awaitable[Any]]
) -> None:
    fake = await module("gone", 1)
    entry = router.registry.get("gone")
    assert entry is not None
    await fake.server.stop(0)
    await eventually(lambda: entry.status == INACTIVE)


class _CheckOnlyHealth(grpc.GenericRpcHandler):
    """A module whose health service has Check but no Watch."""

    def __init__(self) -> None:
        self.serving = True

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        if details.method != "/grpc.health.v1.Health/Check":
            return None

        async def check(
            request: health_pb2.HealthCheckRequest, context: object
        ) -> health_pb2.HealthCheckResponse:
            serving = health_pb2.HealthCheckResponse.SERVING
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            return health_pb2.HealthCheckResponse(status=serving if self.serving else not_serving)

        return grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )


async def test_static_module_from_config_polls_check_when_watch_is_unimplemented() -> None:
    health = _CheckOnlyHealth()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((health,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    static = StaticModule(
        name="legacy",
        address=f"127.0.0.1:{port}",
        capabilities=[StaticCapability(capability="search.track", priority=3)],
    )
    app = router_app(modules=[static])
    await app.start()
    try:
        entry = app.registry.get("legacy")
        assert entry is not None
        assert not entry.dynamic
        assert entry.status == ACTIVE
        health.serving = False
        await eventually(lambda: entry.status == INACTIVE)
        health.serving = True
        await eventually(lambda: entry.status == ACTIVE)
    finally:
        await app.stop(0)
        await server.stop(0)


async def test_required_module_must_be_healthy(
    router: RouterApp,
    module: Callable[..., Awaitable[Any]],
    search: search_pb2_grpc.SearchServiceAsyncStub,
) -> None:
    await module("needy", 10, required_modules=("metadata",))
    await module("plain", 1)
    assert (await search.SearchTrack(REQUEST, timeout=5)).results[0].source == "plain"
    helper = await module("metadata", 0, capabilities=("download.status",))
    assert (await search.SearchTrack(REQUEST, timeout=5)).results[0].source == "needy"
    await helper.server.stop(0)
    await eventually(lambda: router.registry.ordered("search.track")[0].name == "plain")


async def test_bus_and_pipeline_rpcs_are_unimplemented_without_them(
    router_stub: router_pb2_grpc.RouterServiceAsyncStub,
    event_bus_stub: event_bus_pb2_grpc.EventBusServiceAsyncStub,
) -> None:
    # Not served at all: a router without a bus does not offer EventBusService.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await event_bus_stub.ListEvents(router_pb2.ListEventsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The deprecated RouterService says which part this router runs without.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router_stub.ListEvents(router_pb2.ListEventsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "without an event bus" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router_stub.ListPipelineRuns(router_pb2.ListPipelineRunsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_bus_rpcs_are_delegated_and_status_changes_reported(tmp_path: Path) -> None:
    from router.app import RouterApp
    from router.bus import BusSettings, create_bus
    from router.settings import RouterSection, RouterSettings
    from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2_grpc
    from tests.helpers.bus import completed, envelope

    bus = create_bus(BusSettings(), state_dir=tmp_path)
    await bus.start()
    changes: list[tuple[str, int, int, str]] = []
    app = RouterApp(
        RouterSettings(router=RouterSection(address="127.0.0.1:0")),
        bus=bus,
        on_status_change=lambda *a: changes.append(a),
    )
    await app.start()
    try:
        async with open_channel(app.address) as ch:
            event = envelope(completed())
            await event_bus_pb2_grpc.EventBusServiceStub(ch).Publish(
                router_pb2.PublishRequest(event=event), timeout=5
            )
            # The deprecated RouterService answers from the same bus as EventBusService.
            stub = router_pb2_grpc.RouterServiceStub(ch)
            answer = await stub.ListEvents(router_pb2.ListEventsRequest(limit=3), timeout=5)
            assert [e.event_id for e in answer.events] == [event.event_id]
            server = KitServer("tiny")
            await server.start()
            static = router_pb2.ModuleAnnouncement(
                name="tiny",
                address=server.address,
                capabilities=[router_pb2.CapabilityRegistration(capability="search.track")],
            )
            entry = app.registry.register(static, dynamic=False)
            await app.watcher.check_now(entry)
            await server.stop(0)
            await app.watcher.check_now(entry)
            assert [(c[0], c[1], c[2]) for c in changes] == [
                ("tiny", module_pb2.MODULE_STATUS_UNKNOWN, ACTIVE),
                ("tiny", ACTIVE, INACTIVE),
            ]
    finally:
        await app.stop(0)
        await bus.stop()


async def test_undecodable_register_stream_is_invalid_argument(router: RouterApp) -> None:
    async def garbage() -> AsyncIterator[bytes]:
        yield b"\x0a\x7f"  # field 1 announced 127 bytes long, none following

    async with open_channel(router.address) as ch:
        register: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = ch.stream_stream(
            "/soulspot.router.v1.RegistryService/Register"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in register(garbage(), timeout=5):
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in (caught.value.details() or "")
