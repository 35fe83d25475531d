"""`python -m router`: the router on SOULSPOT_ROUTER__ADDRESS (default 127.0.0.1:50051),
with the event bus over SQLite in the state folder, the post-download pipeline and the
playlist watches, speaking mutual TLS as spiffe://soulspot/router/router (SOULSPOT_TLS__*)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from router.app import RouterApp
from router.bus import EventBus, create_bus, tune_process_for_bus
from router.bus.jetstream.startup import JetStreamUnreachable, waiting_for
from router.http import start_router_http
from router.pipeline import Pipeline, create_pipeline
from router.settings import RouterSettings
from router.watches import create_watches
from services.kit.observability.logging import setup_logging
from services.kit.observability.tracing import configure_tracing
from services.kit.security.identity import ROUTER
from services.kit.security.tls import transport_for, use_transport
from services.kit.support import eventloop
from soulspot.events.v1 import module_pb2 as module_events_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp import web

    from router.routing.registry import Status
    from router.watches import PlaylistWatches

log = logging.getLogger("soulspot.router")


class StatusPublisher:
    """The registry's on_status_change hook: publishes module.status_changed without making
    routing wait for the event log."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.pending: set[asyncio.Task[object]] = set()
        # False while the event log is not there yet (a router waiting for JetStream).
        self.ready: Callable[[], bool] = lambda: True

    def __call__(self, module: str, previous: Status, current: Status, reason: str) -> None:
        if not self.ready():
            return
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


async def start_log_side(
    app: RouterApp,
    settings: RouterSettings,
    bus: EventBus,
    pipeline: Pipeline,
    watches: PlaylistWatches,
) -> web.AppRunner | None:
    """The bus, the pipeline and the playlist watches (both clients of the router's own
    address), then the dashboard: at once on SQLite; on JetStream once it answers, retried
    meanwhile (RouterApp.start_bus)."""
    address = loopback_address(app.address)
    # Each part's start, and how to close what a failed start of it opened.
    parts: list[tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]] = [
        (lambda: pipeline.start(address), pipeline.store.close),
        (lambda: watches.start(address), watches.store.close),
    ]
    if app.bus_gate.is_open:
        for start_part, _ in parts:
            await start_part()
    else:
        parts.insert(0, (bus.start, bus.store.close))
        started = 0

        async def start() -> None:
            nonlocal started
            while started < len(parts):
                await parts[started][0]()
                started += 1

        async def undo() -> None:
            await parts[started][1]()

        await app.start_bus(
            start,
            undo,
            servers=settings.bus.nats_servers,
            give_up_after_s=settings.bus.nats_start_wait_s,
        )
    return await start_router_http(app.address, settings)


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
    on_jetstream = settings.bus.backend == "jetstream"
    if not on_jetstream:
        await bus.start()
    publisher = StatusPublisher(bus)
    pipeline = create_pipeline(settings)
    watches = create_watches(settings)
    app = RouterApp(
        settings, bus=bus, pipeline=pipeline, on_status_change=publisher, watches=watches
    )
    if on_jetstream:
        # Up before JetStream answers, NOT_SERVING until it does (RouterApp.start_bus).
        app.bus_gate.close(waiting_for(settings.bus.nats_servers))
    publisher.ready = lambda: app.bus_gate.is_open
    try:
        await app.start()
        log_side = asyncio.ensure_future(start_log_side(app, settings, bus, pipeline, watches))
        http = None
        try:
            serving = asyncio.ensure_future(app.serve())
            await asyncio.wait({serving, log_side}, return_when=asyncio.FIRST_COMPLETED)
            if log_side.done() and log_side.exception() is not None:
                # Gave up on JetStream: stop serving, then exit with the reason (below).
                log.error("router stopping: %s", log_side.exception())
                await app.server.stop()
            await serving
        finally:
            if not log_side.done():
                log_side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                http = await log_side
            if http is not None:
                await http.cleanup()
    except JetStreamUnreachable as err:
        raise SystemExit(f"router: {err}") from err
    finally:
        await watches.stop()
        await pipeline.stop()
        await publisher.drain()
        await bus.stop()


if __name__ == "__main__":
    tune_process_for_bus()
    eventloop.run(main())
