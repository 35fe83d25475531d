"""`python -m router`: the router on SOULSPOT_ROUTER__ADDRESS (default 127.0.0.1:50051),
with the event bus over SQLite in the state folder, the post-download pipeline and the
playlist watches, speaking mutual TLS as spiffe://soulspot/router/router (SOULSPOT_TLS__*)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from router.app import RouterApp
from router.bus import EventBus, create_bus, tune_process_for_bus
from router.http import start_router_http
from router.pipeline import create_pipeline
from router.settings import RouterSettings
from router.watches import create_watches
from services.kit.observability.logging import setup_logging
from services.kit.observability.tracing import configure_tracing
from services.kit.security.identity import ROUTER
from services.kit.security.tls import transport_for, use_transport
from services.kit.support import eventloop
from soulspot.events.v1 import module_pb2 as module_events_pb2

if TYPE_CHECKING:
    from router.routing.registry import Status

log = logging.getLogger("soulspot.router")


class StatusPublisher:
    """The registry's on_status_change hook: publishes module.status_changed without making
    routing wait for the event log."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.pending: set[asyncio.Task[object]] = set()

    def __call__(self, module: str, previous: Status, current: Status, reason: str) -> None:
        event = module_events_pb2.ModuleStatusChanged(
            module=module, previous=previous, current=current, reason=reason
        )
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(
            self.bus.publish_local(event, subject=module)
        )
        self.pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not publish module.status_changed: %s", task.exception())

    async def drain(self) -> None:
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=1.0)


def loopback_address(address: str) -> str:
    """How this process reaches its own server: a wildcard bind (`0.0.0.0:PORT`) on loopback,
    an address its TLS certificate names (127.0.0.1), unlike 0.0.0.0."""
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        return f"127.0.0.1:{port}"
    return address


async def main() -> None:
    settings = RouterSettings()
    setup_logging("router", settings.log_level, json_lines=settings.log_json)
    configure_tracing("router")
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # Before any port or channel opens: the server, the pipeline's and the proxy's channels.
    try:
        use_transport(transport_for(ROUTER, settings.tls, settings.state_dir))
    except OSError as err:
        raise SystemExit(f"router: {err}") from err
    bus = create_bus(settings.bus, state_dir=settings.state_dir)
    await bus.start()
    publisher = StatusPublisher(bus)
    pipeline = create_pipeline(settings)
    watches = create_watches(settings)
    app = RouterApp(
        settings, bus=bus, pipeline=pipeline, on_status_change=publisher, watches=watches
    )
    try:
        await app.start()
        # After the router serves: the pipeline is a client of the router's own address.
        await pipeline.start(loopback_address(app.address))
        # Watched playlists are re-synced through the router's own address, like the pipeline.
        await watches.start(loopback_address(app.address))
        http = await start_router_http(app.address, settings)
        try:
            await app.serve()
        finally:
            if http is not None:
                await http.cleanup()
    finally:
        await watches.stop()
        await pipeline.stop()
        await publisher.drain()
        await bus.stop()


if __name__ == "__main__":
    tune_process_for_bus()
    eventloop.run(main())
