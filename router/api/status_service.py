"""StatusService: the mesh as the router sees it (modules, capabilities, warnings), with what
the event bus, the pipeline and the playlist watches add (consumers and the log's position,
runs in flight, watched playlists)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc

from router.routing.status import build_status
from soulspot.router.v1 import router_pb2, status_pb2, status_pb2_grpc

if TYPE_CHECKING:
    from router.bus.event_bus import EventBus
    from router.pipeline.engine import Pipeline
    from router.routing.capabilities import Catalog
    from router.routing.registry import Registry
    from router.routing.warnings import WarningBoard
    from router.watches.service import PlaylistWatches
    from router.xds.service import XdsService

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name


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

    async def GetStatus(
        self, request: router_pb2.GetStatusRequest, context: Context
    ) -> router_pb2.GetStatusResponse:
        response = build_status(self.registry, self.catalog, self.warnings, self.started_at)
        if self.bus is not None:
            response.consumers.extend(self.bus.consumers_info())
            response.last_sequence = self.bus.last_sequence
        if self.pipeline is not None:
            self.pipeline.fill_status(response)
        if self.watches is not None:
            await self.watches.fill_status(response)
        if self.xds is not None:
            self.xds.fill_status(response)
        return response
