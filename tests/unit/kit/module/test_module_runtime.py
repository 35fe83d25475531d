"""services.kit.module.runtime: a running module (server, health, settings section, events)."""

from __future__ import annotations

import socket
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2

from services.kit.events.client import EventHandlers, InMemoryBus
from services.kit.module.runtime import ModuleRuntime
from services.kit.module.spec import (
    Capability,
    ModuleParts,
    ModuleSection,
    ModuleSpec,
    ServiceBinding,
)
from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import InvalidArgument, bad_request
from services.kit.support.settings import KitSettings
from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import envelope_pb2, track_pb2
from tests.helpers.module_checks import (
    health_status,
    reflected_services,
    rpc_error,
    violated_fields,
)

SERVICE = "soulspot.capabilities.v1.SearchService"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Echo(search_pb2_grpc.SearchServiceServicer):
    async def SearchTrack(
        self, request: search_pb2.SearchTrackRequest, context: Any
    ) -> search_pb2.SearchTrackResponse:
        track = references_pb2.TrackReference(title=request.query, artist="echo")
        return search_pb2.SearchTrackResponse(results=[search_pb2.SearchResult(track=track)])


def echo_binding() -> ServiceBinding:
    return ServiceBinding.of(
        search_pb2.DESCRIPTOR.services_by_name["SearchService"],
        Echo(),
        search_pb2_grpc.add_SearchServiceServicer_to_server,
    )


def spec(name: str = "demo", default_port: int = 0, **parts: Any) -> ModuleSpec[ModuleSection]:
    def build(rt: ModuleRuntime[ModuleSection]) -> ModuleParts:
        return ModuleParts(services=[echo_binding()], **parts)

    return ModuleSpec(name, default_port, [Capability("search.track", 1)], build, ModuleSection)


def settings() -> KitSettings:
    return KitSettings(router_address="")


async def test_serves_validates_and_reflects() -> None:
    async with (
        ModuleRuntime(spec(), settings(), port=0) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        stub = search_pb2_grpc.SearchServiceStub(channel)
        reply = await stub.SearchTrack(search_pb2.SearchTrackRequest(query="x"))
        assert reply.results[0].track.title == "x"
        error = await rpc_error(stub.SearchTrack(search_pb2.SearchTrackRequest()))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(error) == ["query"]
        assert {SERVICE, "grpc.health.v1.Health"} <= await reflected_services(channel)
        # Without a router the publisher is an in-memory bus.
        assert isinstance(rt.publisher, InMemoryBus)


async def test_set_health_marks_every_service_with_the_reason() -> None:
    async with (
        ModuleRuntime(spec(), settings(), port=0) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        await rt.set_health(False, "backend gone")
        for service in ("", SERVICE):
            assert await health_status(channel, service) == NOT_SERVING
        assert rt.health.status(SERVICE) == (False, "backend gone")
        await rt.set_health(True, "back")
        assert await health_status(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING


async def test_health_set_while_building_holds_from_the_first_check() -> None:
    async def start() -> None:
        await runtime.set_health(False, "not configured")

    runtime = ModuleRuntime(spec(start=start), settings(), port=0)
    async with runtime as rt, open_channel(f"127.0.0.1:{rt.port}") as channel:
        assert await health_status(channel, SERVICE) == NOT_SERVING


async def test_port_and_address_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        # The default port is in use: only the override lets the module start.
        monkeypatch.setenv("SOULSPOT_DEMO__PORT", "0")
        monkeypatch.setenv("SOULSPOT_DEMO__ADDRESS", "127.0.0.1")
        async with ModuleRuntime(spec(default_port=busy), settings()) as rt:
            assert rt.port not in (0, busy)
            assert rt.address == f"127.0.0.1:{rt.port}"


class Refusing(search_pb2_grpc.SearchServiceServicer):
    async def SearchTrack(
        self, request: search_pb2.SearchTrackRequest, context: Any
    ) -> search_pb2.SearchTrackResponse:
        raise InvalidArgument("no such query", details=[bad_request({"query": "unknown"})])


async def test_a_mesh_error_raised_by_a_servicer_reaches_the_caller_as_its_rich_status() -> None:
    def build(rt: ModuleRuntime[ModuleSection]) -> ModuleParts:
        binding = ServiceBinding.of(
            search_pb2.DESCRIPTOR.services_by_name["SearchService"],
            Refusing(),
            search_pb2_grpc.add_SearchServiceServicer_to_server,
        )
        return ModuleParts(services=[binding])

    refusing = ModuleSpec("demo", 0, [], build, ModuleSection)
    async with (
        ModuleRuntime(refusing, settings(), port=0) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        stub = search_pb2_grpc.SearchServiceStub(channel)
        error = await rpc_error(stub.SearchTrack(search_pb2.SearchTrackRequest(query="x")))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.message == "no such query"
        assert violated_fields(error) == ["query"]


class DemoSection(ModuleSection):
    greeting: str = "hello"


class DemoSettings(KitSettings):
    demo: DemoSection = DemoSection()


def typed_spec(seen: list[DemoSection]) -> ModuleSpec[DemoSection]:
    def build(rt: ModuleRuntime[DemoSection]) -> ModuleParts:
        seen.append(rt.section)
        return ModuleParts(services=[echo_binding()])

    return ModuleSpec("demo", 0, [], build, DemoSection, settings_cls=DemoSettings)


async def test_the_factory_gets_the_settings_section_of_the_spec_type() -> None:
    seen: list[DemoSection] = []
    configured = DemoSettings(router_address="", demo=DemoSection(greeting="hi", port=0))
    async with ModuleRuntime(typed_spec(seen), configured):
        assert [s.greeting for s in seen] == ["hi"]


async def test_settings_without_the_section_give_the_factory_its_defaults() -> None:
    seen: list[DemoSection] = []
    async with ModuleRuntime(typed_spec(seen), settings(), port=0):
        assert seen == [DemoSection()]


def test_a_section_of_another_type_is_refused_before_anything_starts() -> None:
    class OtherSettings(KitSettings):
        demo: ModuleSection = ModuleSection()

    with pytest.raises(TypeError, match="not the spec's DemoSection"):
        ModuleRuntime(typed_spec([]), OtherSettings(router_address=""))


async def test_handlers_subscribe_to_the_in_memory_bus() -> None:
    seen: list[str] = []
    handlers = EventHandlers()

    @handlers.on("track.imported")
    async def on_imported(payload: Any, envelope: envelope_pb2.EventEnvelope) -> None:
        seen.append(payload.track.title)

    bus = InMemoryBus()
    async with ModuleRuntime(spec(handlers=handlers), settings(), port=0, publisher=bus):
        await bus.publish(
            track_pb2.TrackImported(
                track=references_pb2.TrackReference(title="T", artist="A"),
                file=references_pb2.FileReference(path="/x.flac"),
            )
        )
        await bus.drain()
    assert seen == ["T"]


async def test_metrics_endpoint_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_DEMO__METRICS_ADDRESS", "127.0.0.1:0")
    async with (
        ModuleRuntime(spec(), settings(), port=0) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        stub = search_pb2_grpc.SearchServiceStub(channel)
        await stub.SearchTrack(search_pb2.SearchTrackRequest(query="x"))
        assert rt.metrics_address
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://{rt.metrics_address}/metrics")
        assert answer.status_code == 200
        assert "soulspot_rpc_server_handled_total" in answer.text
