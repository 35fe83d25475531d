"""A router with an event bus serving mutual TLS (its own PKI, the shipped policy), and a
channel as each identity, for the authorization tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.app import RouterApp
from router.bus import create_bus
from router.settings import RouterSection, RouterSettings
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from services.kit.security.ca import ensure_identities
from services.kit.security.identity import CLI, ROUTER, Identity
from services.kit.security.tls import TlsSection, transport_for
from soulspot.router.v1 import event_bus_pb2_grpc, registry_pb2_grpc
from tests.helpers.bus import bus_settings

if TYPE_CHECKING:
    from pathlib import Path

    import grpc

LIBRARY = Identity.module("library")
CATALOG = Identity.module("catalog")
SOULSEEK = Identity.module("soulseek")
NOTIFICATIONS = Identity.module("notifications")
IDENTITIES = (ROUTER, CLI, LIBRARY, CATALOG, SOULSEEK, NOTIFICATIONS)


class SecureMesh:
    """The router (mutual TLS, the shipped policy) and a channel per identity on demand."""

    def __init__(self, tmp_path: Path, **section: object) -> None:
        self.tmp_path = tmp_path
        self.tls = TlsSection(pki_dir=tmp_path / "pki")
        ensure_identities(tmp_path / "pki", IDENTITIES)
        values: dict[str, object] = {
            "address": "127.0.0.1:0",
            "health_poll_interval_s": 0.1,
            "health_retry_interval_s": 0.05,
        }
        values.update(section)
        self.bus = create_bus(bus_settings(), state_dir=tmp_path / "state")
        self.app = RouterApp(
            RouterSettings(router=RouterSection.model_validate(values)),
            bus=self.bus,
            transport=transport_for(ROUTER, self.tls, tmp_path),
        )
        self._channels: dict[Identity, grpc.aio.Channel] = {}
        self._servers: list[KitServer] = []

    async def start(self) -> None:
        await self.bus.start()
        await self.app.start()

    async def stop(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        await self.app.stop(0.2)
        for server in self._servers:
            await server.stop(0)
        await self.bus.stop()

    def channel(self, identity: Identity) -> grpc.aio.Channel:
        if identity not in self._channels:
            transport = transport_for(identity, self.tls, self.tmp_path)
            self._channels[identity] = open_channel(self.app.address, transport=transport)
        return self._channels[identity]

    def bus_stub(self, identity: Identity) -> event_bus_pb2_grpc.EventBusServiceAsyncStub:
        return event_bus_pb2_grpc.EventBusServiceStub(self.channel(identity))

    def registry_stub(self, identity: Identity) -> registry_pb2_grpc.RegistryServiceAsyncStub:
        return registry_pb2_grpc.RegistryServiceStub(self.channel(identity))

    async def module_server(self) -> str:
        """A (plaintext) module process answering health checks: what registration points at."""
        server = KitServer("module", "127.0.0.1:0", grace_s=0.2)
        await server.start()
        self._servers.append(server)
        return server.address
