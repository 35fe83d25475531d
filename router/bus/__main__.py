"""`python -m router.bus`: a router process serving only the event bus: EventBusService, and the
deprecated RouterService's bus RPCs (its other RPCs answer UNIMPLEMENTED here).

The full router (`python -m router`) serves the same bus; this entry runs it alone, for
tests that need a real bus process and for benchmarks. It speaks mutual TLS as the router
(spiffe://soulspot/router/router) with the certificates of SOULSPOT_TLS__PKI_DIR, or
plaintext with SOULSPOT_TLS__PLAINTEXT=true.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from router.api import router_service
from router.api.router_service import RouterServiceDelegate
from router.bus import BusSettings, create_bus, tune_process_for_bus
from router.bus.event_bus import SERVICE_NAME
from router.security.caller import Callers
from router.security.policy import load_policy
from services.kit.observability.logging import setup_logging
from services.kit.rpc.server import KitServer
from services.kit.security.identity import ROUTER
from services.kit.security.tls import transport_for, use_transport
from services.kit.support import eventloop
from services.kit.support.settings import KitSettings, Section
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2_grpc


class _RouterAddress(Section):
    address: str = "127.0.0.1:50051"
    # The same authorization policy as the full router (router/security/policy.yaml).
    policy_file: str | None = None


class BusProcessSettings(KitSettings):
    """SOULSPOT_ROUTER__ADDRESS (where to listen) and the SOULSPOT_BUS__* section."""

    router: _RouterAddress = Field(default_factory=_RouterAddress)
    bus: BusSettings = Field(default_factory=BusSettings)
    # SOULSPOT_BUS_PORT_FILE: where to write the port actually bound (tests and the
    # benchmark bind port 0 and read it back).
    bus_port_file: str = ""


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)  # atomic: a reader never sees a half-written port


async def serve(settings: BusProcessSettings) -> None:
    bus = create_bus(settings.bus, state_dir=settings.state_dir)
    await bus.start()
    server = KitServer("router", settings.router.address)
    # Who may publish, own a consumer or run admin operations: decided exactly as in the full
    # router, from the caller's verified identity (taken at its word only over plaintext).
    policy_file = settings.router.policy_file
    bus.callers = Callers(
        load_policy(Path(policy_file) if policy_file else None, bus.registry),
        secure=lambda: server.secure,
    )
    server.add_service(
        lambda s: event_bus_pb2_grpc.add_EventBusServiceServicer_to_server(bus, s), SERVICE_NAME
    )
    delegate = RouterServiceDelegate(bus=bus, process="this process (router.bus)")
    server.add_service(
        lambda s: router_pb2_grpc.add_RouterServiceServicer_to_server(delegate, s),
        router_service.SERVICE_NAME,
    )
    try:
        port = await server.start()
        if settings.bus_port_file:
            await asyncio.to_thread(_write_port, Path(settings.bus_port_file), port)
        await server.serve()
    finally:
        await bus.stop()


def main() -> None:
    tune_process_for_bus()
    settings = BusProcessSettings()
    setup_logging("router", settings.log_level, json_lines=settings.log_json)
    try:
        use_transport(transport_for(ROUTER, settings.tls, settings.state_dir))
    except OSError as err:
        raise SystemExit(f"router.bus: {err}") from err
    # The same event loop as the full router (uvloop unless SOULSPOT_EVENT_LOOP says).
    eventloop.run(serve(settings))


if __name__ == "__main__":
    main()
