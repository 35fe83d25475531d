"""Assembly: one KitServer serving the router's own services (RegistryService, StatusService,
EventBusService with a bus, PipelineRunService with a pipeline, and the deprecated
RouterService delegating to them), every capability service (the proxy), health per service
and reflection, plus the registry and health watching.

Pass `bus=` (an EventBus) and `pipeline=` (a Pipeline) to serve them; `on_status_change` gets
(module, previous, current, reason) on every module status change.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from router.api import registry_service, router_service, status_service
from router.api.bus_gate import BusGate, OutageHealth
from router.api.registry_service import RegistryServicer
from router.api.router_service import RouterServiceDelegate
from router.api.status_service import StatusServicer
from router.bus import event_bus
from router.bus.consumer_ownership import ConsumerOwnership
from router.bus.jetstream.startup import start_when_reachable
from router.pipeline import engine
from router.routing.capabilities import load_catalog
from router.routing.health_watch import HealthWatcher
from router.routing.proxy import CapabilityProxy
from router.routing.registry import Registry
from router.routing.routing_table import RoutingTable
from router.routing.warnings import WarningBoard
from router.security.caller import Callers
from router.security.policy import load_policy
from router.watches.service import SERVICE_NAME as watches_service_name
from router.xds.service import XdsService
from services.kit.events.registry import default_registry
from services.kit.observability.metrics import MeshMetrics, default_metrics, server_interceptors
from services.kit.rpc.server import KitServer
from services.kit.rpc.wrapping_server import WrappingServer
from soulspot.router.v1 import (
    event_bus_pb2,
    event_bus_pb2_grpc,
    pipeline_runs_pb2,
    pipeline_runs_pb2_grpc,
    registry_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    status_pb2_grpc,
    watches_pb2_grpc,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from router.bus.event_bus import EventBus
    from router.pipeline.engine import Pipeline
    from router.routing.registry import StatusCallback
    from router.settings import RouterSettings
    from router.watches import PlaylistWatches
    from services.kit.security.tls import Transport

log = logging.getLogger("soulspot.router")

# The RPCs that need the event log, also as the deprecated RouterService carries them.
_LOG_METHODS = frozenset(
    m.name
    for service in (
        event_bus_pb2.DESCRIPTOR.services_by_name["EventBusService"],
        pipeline_runs_pb2.DESCRIPTOR.services_by_name["PipelineRunService"],
    )
    for m in service.methods
)


class RouterApp:
    def __init__(
        self,
        settings: RouterSettings,
        *,
        bus: EventBus | None = None,
        pipeline: Pipeline | None = None,
        on_status_change: StatusCallback | None = None,
        address: str | None = None,
        metrics: MeshMetrics | None = None,
        transport: Transport | None = None,
        watches: PlaylistWatches | None = None,
    ) -> None:
        self.settings = settings
        section = settings.router
        # The process default unless given: /metrics serves that one (tests pass their own).
        self.metrics = metrics if metrics is not None else default_metrics()
        self.catalog = load_catalog()
        self.registry = Registry(self.catalog, section, self.metrics)
        self.registry.on_status_change = on_status_change
        self.watcher = HealthWatcher(self.registry, section)
        self.warnings = WarningBoard()
        self.table = RoutingTable(self.registry, self.catalog, section.routing_table_ttl_s)
        self.proxy = CapabilityProxy(
            self.registry, self.catalog, self.warnings, section, self.metrics
        )
        # Who may do what, from the caller's verified identity; a plaintext router (no TLS
        # on its port) takes callers at their word.
        self.policy = load_policy(
            Path(section.policy_file) if section.policy_file else None,
            bus.registry if bus is not None else default_registry(),
        )
        self.callers = Callers(self.policy, secure=lambda: self.server.secure)
        if bus is not None:
            bus.callers = self.callers
        # Playlists re-synced on a schedule (router/watches/), pass `watches=` to serve them.
        self.watches = watches
        if watches is not None:
            watches.callers = self.callers
        self.registry_service = RegistryServicer(
            self.registry, self.watcher, self.table, self.callers
        )
        self.status_service = StatusServicer(
            self.registry, self.catalog, self.warnings, bus=bus, pipeline=pipeline, watches=watches
        )
        # Proxyless clients read routes, clusters and endpoints over xDS (router/xds/).
        self.xds = (
            XdsService(self.catalog, self.registry, self.callers, section.xds)
            if section.xds.enabled
            else None
        )
        self.status_service.xds = self.xds
        # Closed while the event log is out of reach at start (see start_bus).
        self.bus_gate = BusGate()
        self.status_service.bus_gate = self.bus_gate
        self._gated_health = [""]
        if bus is not None:
            self._gated_health.append(event_bus.SERVICE_NAME)
        if pipeline is not None:
            self._gated_health.append(engine.SERVICE_NAME)
        if watches is not None:
            self._gated_health.append(watches_service_name)
        # Once the log has started on JetStream: a NATS lost since shows (see start_bus).
        self._outage: OutageHealth | None = None
        # One implementation per RPC: RouterService hands each to the servicer that owns it.
        self.router_service = RouterServiceDelegate(
            registry=self.registry_service,
            bus=bus,
            status=self.status_service,
            pipeline=pipeline,
        )
        self.server = KitServer(
            "router",
            address or section.address,
            interceptors=server_interceptors(self.metrics),
            transport=transport,
        )
        self._add_own_services(bus, pipeline)
        self.server.add_service(
            lambda s: s.add_generic_rpc_handlers((self.proxy,)), *self.catalog.services
        )
        self._service_health: dict[str, bool] = {}
        self._pending_health: set[asyncio.Task[None]] = set()
        self.registry.listeners.append(self._on_change)

    def _add_own_services(self, bus: EventBus | None, pipeline: Pipeline | None) -> None:
        add = self.server.add_service
        add(
            lambda s: registry_pb2_grpc.add_RegistryServiceServicer_to_server(
                self.registry_service, s
            ),
            registry_service.SERVICE_NAME,
        )
        add(
            lambda s: status_pb2_grpc.add_StatusServiceServicer_to_server(self.status_service, s),
            status_service.SERVICE_NAME,
        )
        gated = self.bus_gate.wrapper()
        if bus is not None:
            add(
                lambda s: event_bus_pb2_grpc.add_EventBusServiceServicer_to_server(
                    bus, WrappingServer(s, gated)
                ),
                event_bus.SERVICE_NAME,
            )
        if pipeline is not None:
            add(
                lambda s: pipeline_runs_pb2_grpc.add_PipelineRunServiceServicer_to_server(
                    pipeline, WrappingServer(s, gated)
                ),
                engine.SERVICE_NAME,
            )
        gated_delegations = self.bus_gate.wrapper(_LOG_METHODS)
        add(
            lambda s: router_pb2_grpc.add_RouterServiceServicer_to_server(
                self.router_service, WrappingServer(s, gated_delegations)
            ),
            router_service.SERVICE_NAME,
        )
        if self.xds is not None:
            self.xds.add_to(self.server)
        if self.watches is not None:
            watches = self.watches
            # With the bus on JetStream the watches live there too: gated like the bus.
            add(
                lambda s: watches_pb2_grpc.add_PlaylistWatchServiceServicer_to_server(
                    watches, WrappingServer(s, gated)
                ),
                watches_service_name,
            )

    @property
    def address(self) -> str:
        return self.server.address

    async def start(self) -> int:
        # Capability services start NOT_SERVING: nobody provides them until a module does.
        for service in self.catalog.services:
            self._service_health[service] = False
            await self.server.set_status(service, False, "no healthy provider")
        if not self.bus_gate.is_open:
            for service in self._gated_health:
                await self.server.set_status(service, False, self.bus_gate.waiting_for)
        port = await self.server.start()
        self.status_service.answered_by = status_service.answering_name(self.address)
        store = self.status_service.bus.store if self.status_service.bus is not None else None
        if isinstance(store, ConsumerOwnership):
            # Its consumer leases name this router as status does: served_by = answered_by.
            store.served_as = self.status_service.answered_by
        for static in self.settings.router.modules:
            announcement = router_pb2.ModuleAnnouncement(
                name=static.name,
                address=static.address,
                version=static.version,
                capabilities=[
                    router_pb2.CapabilityRegistration(
                        capability=c.capability,
                        priority=c.priority,
                        required_modules=c.required_modules,
                    )
                    for c in static.capabilities
                ],
            )
            entry = self.registry.register_static(announcement)
            await self.watcher.check_now(entry)
            self.watcher.watch(entry)
        return port

    async def start_bus(
        self,
        start: Callable[[], Awaitable[None]],
        undo: Callable[[], Awaitable[None]],
        *,
        servers: Sequence[str],
        give_up_after_s: float,
    ) -> None:
        """Start the event log's side (`start`: the bus, the pipeline's run store) while the
        router serves, retried after `undo` under the kit's backoff until JetStream answers
        (router/bus/jetstream/startup.py; JetStreamUnreachable after `give_up_after_s`).

        Close `bus_gate` before `start()` for the router to come up NOT_SERVING: until the
        log answers, the health of "" and of the bus's and pipeline's services is
        NOT_SERVING, their calls answer UNAVAILABLE, and GetStatus warns, each saying what it
        waits for (the playlist watches too: on JetStream they live there). Registration, the
        capability proxy and xDS serve meanwhile: none of them needs NATS, so modules keep
        finding and calling each other through a router whose NATS is away. Once started, a
        NATS connection lost and being re-established does the same to those services, but
        never to "" (router/api/bus_gate.py OutageHealth)."""
        await start_when_reachable(
            start,
            undo,
            servers=servers,
            give_up_after_s=give_up_after_s,
            on_waiting=self.bus_gate.close,
        )
        self.bus_gate.open()
        for service in self._gated_health:
            await self.server.set_status(service, True)
        # From here a lost NATS connection makes the services needing it NOT_SERVING, not "".
        self._outage = OutageHealth(
            self.bus_gate, servers, [s for s in self._gated_health if s], self.server.set_status
        )
        self._outage.start()

    async def stop(self, grace: float | None = None) -> None:
        # Long streams end first, cleanly: cancelled by the server stop they would die with it.
        self.registry_service.close()
        self.table.close()
        if self.xds is not None:
            await self.xds.close()
        if self.watches is not None:
            # A run's calls go through this server: they must not hold its grace period open.
            await self.watches.stop()
        if self._outage is not None:
            await self._outage.stop()
        await asyncio.sleep(0.05)
        await self.watcher.close()
        await self.server.stop(grace)
        await self.registry.close()
        for task in list(self._pending_health):
            await task

    async def serve(self) -> None:
        """Serve until SIGTERM or SIGINT (or the server ends), then stop gracefully."""
        loop = asyncio.get_running_loop()
        requested = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, requested.set)
        try:
            ended = asyncio.ensure_future(self.server.wait())
            asked = asyncio.ensure_future(requested.wait())
            try:
                await asyncio.wait({ended, asked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                asked.cancel()
            log.info("router stopping")
            await self.stop()
            await ended
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    def _on_change(self) -> None:
        if not self.table.refresh():
            return
        for capability in self.catalog.by_capability:
            if self.table.available(capability):
                self.warnings.clear(capability)
        for service, capabilities in self.catalog.services.items():
            serving = any(self.table.available(c) for c in capabilities)
            if self._service_health.get(service) == serving:
                continue
            self._service_health[service] = serving
            reason = None if serving else "no healthy provider"
            task = asyncio.get_running_loop().create_task(
                self.server.set_status(service, serving, reason)
            )
            self._pending_health.add(task)
            task.add_done_callback(self._pending_health.discard)
