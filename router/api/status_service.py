"""StatusService: the mesh as the router sees it (modules, capabilities, warnings), with what
the event bus, the pipeline and the playlist watches add (consumers, the log's position and
its dead letters, runs in flight, watched playlists), and which router answered.

The log's position and the dead letters are read from the bus's store, not from this
router's memory: with several routers on one JetStream, each answers with the shared log's
figures, not with how far its own tail has caught up.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import grpc

from router.bus.store import ConsumerHost
from router.routing.status import build_status
from soulspot.router.v1 import router_pb2, status_pb2, status_pb2_grpc

if TYPE_CHECKING:
    from router.api.bus_gate import BusGate
    from router.bus.event_bus import EventBus
    from router.pipeline.engine import Pipeline
    from router.routing.capabilities import Catalog
    from router.routing.registry import Registry
    from router.routing.warnings import WarningBoard
    from router.watches.service import PlaylistWatches
    from router.xds.service import XdsService

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name
_EVERY_INTERFACE = frozenset({"", "0.0.0.0", "::", "[::]"})
_log = logging.getLogger(__name__)


def answering_name(address: str) -> str:
    """How a status reply names the router bound at `address` (host:port): a wildcard host
    says nothing about which router it is, so the host name stands in for it."""
    host, _, port = address.rpartition(":")
    if host in _EVERY_INTERFACE:
        host = socket.gethostname()
    return f"{host}:{port}"


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    """GetStatus; `bus` and `pipeline` are optional (a router may run without either)."""

    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        warnings: WarningBoard,
        *,
        bus: EventBus | None = None,
        pipeline: Pipeline | None = None,
        watches: PlaylistWatches | None = None,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.warnings = warnings
        self.bus = bus
        self.pipeline = pipeline
        self.watches = watches
        # The xDS control plane, when the router serves one (set by the router's assembly).
        self.xds: XdsService | None = None
        self.started_at = time.time()
        # This router's name in replies (answering_name of its bound address, set once bound).
        self.answered_by = ""
        # Closed while the event log is out of reach at start (set by the router's assembly):
        # the bus's and pipeline's parts are left out, and a warning says what it waits for.
        self.bus_gate: BusGate | None = None

    async def GetStatus(
        self, request: router_pb2.GetStatusRequest, context: Context
    ) -> router_pb2.GetStatusResponse:
        response = build_status(self.registry, self.catalog, self.warnings, self.started_at)
        response.answered_by = self.answered_by
        waiting = self.bus_gate is not None and not self.bus_gate.is_open
        if waiting and self.bus_gate is not None:
            response.warnings.append(self.bus_gate.warning())
        if self.bus is not None and not waiting:
            response.consumers.extend(await _consumers(self.bus))
            response.last_sequence = await self.bus.store.last_sequence()
            response.dead_letters = await self.bus.store.count_dead_letters()
        if self.pipeline is not None and not waiting:
            self.pipeline.fill_status(response)
        if self.watches is not None and not waiting:
            await self.watches.fill_status(response)
        if self.xds is not None:
            self.xds.fill_status(response)
        return response


async def _consumers(bus: EventBus) -> list[router_pb2.ConsumerInfo]:
    """Every durable consumer, by name. When the store keeps the consumers (JetStream),
    every router reads them there, so each answers with the same figures and names the same
    serving router; only the serving router counts subscribers (they connect to it alone)."""
    store = bus.store
    if not isinstance(store, ConsumerHost):
        return sorted(bus.consumers_info(), key=lambda c: c.name)
    here = {name: consumer.info() for name, consumer in bus.consumers.items()}
    try:
        listed = await store.consumer_statuses()
    except Exception as err:  # NATS unreachable, say: this router's own view, not none
        _log.warning("reading the log's consumers for status failed: %s", err)
        return sorted(bus.consumers_info(), key=lambda c: c.name)
    for info in listed:
        own = here.pop(info.name, None)
        if own is not None:
            info.subscribers = own.subscribers
    # Opened here a moment ago and not yet listed by the store.
    return sorted([*listed, *here.values()], key=lambda c: c.name)
