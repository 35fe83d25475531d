"""StatusService: the mesh as the router sees it (modules, capabilities, warnings), with what
the event bus, the pipeline and the playlist watches add (consumers, the log's position and
its dead letters, runs in flight, watched playlists), and which router answered.

The log's position and the dead letters are read from the bus's store, not from this
router's memory: with several routers on one JetStream, each answers with the shared log's
figures, not with how far its own tail has caught up. Each of those reads has
`STATUS_READ_S` to answer; one that does not (JetStream stalled or out of reach) gives way to
this router's own figure, or to none, and a warning says the reply is partly local.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from router.bus.store import ConsumerHost
from router.routing.status import build_status
from services.kit.support.tasks import finish_within
from services.kit.support.timestamps import timestamp_at
from soulspot.router.v1 import router_pb2, status_pb2, status_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable

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
_T = TypeVar("_T")

# How long each read from the event log's store may take for one status reply. The reads run
# side by side, so a stalled JetStream costs a reply this much, well within the CLI's 10 s
# deadline (a watch listing alone retries for up to 30 s); healthy reads take milliseconds.
STATUS_READ_S = 2.0


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
        if not waiting:
            await self._fill_from_log(response)
        if self.pipeline is not None and not waiting:
            self.pipeline.fill_status(response)
        if self.xds is not None:
            self.xds.fill_status(response)
        return response

    async def _fill_from_log(self, response: router_pb2.GetStatusResponse) -> None:
        """The figures read from the bus's store and the watches, each within
        `STATUS_READ_S`: one that did not answer gives way to this router's own figure (the
        consumers, the log's position) or is left out (dead letters, watched playlists), and
        a warning names which."""
        bus, watches = self.bus, self.watches
        missing: list[str] = []
        # Started first so that it runs beside the bus's reads: one bound for the whole reply.
        listing = asyncio.ensure_future(
            _read_within(watches.watches(), "the watched playlists") if watches else _none()
        )
        try:
            if bus is not None:
                consumers, last, dead = await asyncio.gather(
                    _consumers(bus),
                    _read_within(bus.store.last_sequence(), "the log's position"),
                    _read_within(bus.store.count_dead_letters(), "the dead letters"),
                )
                response.consumers.extend(consumers)
                if last is None:
                    missing.append("the log's position is this router's")
                    last = bus.last_sequence
                response.last_sequence = last
                if dead is None:
                    missing.append("the dead-letter count is unknown")
                else:
                    response.dead_letters = dead
            listed = await listing
        finally:
            listing.cancel()  # a reply cut short leaves no listing behind
        if watches is not None:
            if listed is None:
                missing.append("the watched playlists are left out")
            else:
                response.watched_playlists.extend(listed)
        if missing:
            response.warnings.append(_partial_warning(missing))


async def _read_within(read: Awaitable[_T], what: str) -> _T | None:
    """What `read` returns within `STATUS_READ_S`; None (logged) when it failed or ran out of
    time, so that a status reply does not wait on a stalled JetStream."""
    task = asyncio.ensure_future(read)
    try:
        if await finish_within(task, STATUS_READ_S):
            return task.result()
        _log.warning("reading %s for status: no answer within %gs", what, STATUS_READ_S)
    except Exception as err:
        _log.warning("reading %s for status failed: %s", what, err)
    return None


async def _none() -> None:
    return None


def _partial_warning(missing: list[str]) -> router_pb2.Warning:
    """The warning of a reply whose figures are partly this router's own: JetStream did not
    answer in time (`missing` says what that changed)."""
    return router_pb2.Warning(
        module="router",
        operation="status",
        status=f"JetStream did not answer within {STATUS_READ_S:g}s: " + "; ".join(missing),
        impact="these figures are this router's own, not the shared event log's",
        action="ask again; if it persists, check NATS and the router's logs",
        raised_at=timestamp_at(time.time()),
    )


async def _consumers(bus: EventBus) -> list[router_pb2.ConsumerInfo]:
    """Every durable consumer, by name. When the store keeps the consumers (JetStream),
    every router reads them there, so each answers with the same figures and names the same
    serving router; only the serving router counts subscribers (they connect to it alone)."""
    store = bus.store
    if not isinstance(store, ConsumerHost):
        return sorted(bus.consumers_info(), key=lambda c: c.name)
    here = {name: consumer.info() for name, consumer in bus.consumers.items()}
    listed = await _read_within(store.consumer_statuses(), "the log's consumers")
    if listed is None:  # NATS unreachable, say: this router's own view, not none
        return sorted(bus.consumers_info(), key=lambda c: c.name)
    for info in listed:
        own = here.pop(info.name, None)
        if own is not None:
            info.subscribers = own.subscribers
    # Opened here a moment ago and not yet listed by the store.
    return sorted([*listed, *here.values()], key=lambda c: c.name)
