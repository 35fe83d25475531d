"""The RouterService servicer: registration, status and the routing table here; the event bus
and pipeline RPCs are delegated to the objects handed in at construction."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2

from router.routing.status import build_status
from services.kit.rpc.errors import InvalidArgument, MeshError, abort_with, bad_request
from soulspot.router.v1 import router_pb2, router_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from router.routing.capabilities import Catalog
    from router.routing.health_watch import HealthWatcher
    from router.routing.registry import Registry
    from router.routing.routing_table import RoutingTable
    from router.routing.warnings import WarningBoard

log = logging.getLogger("soulspot.router.service")
Context = grpc.aio.ServicerContext[Any, Any]


async def _delegate_unary(
    target: object | None, what: str, name: str, request: Any, ctx: Context
) -> Any:
    if target is None:
        await ctx.abort(grpc.StatusCode.UNIMPLEMENTED, f"this router runs without {what}")
    return await getattr(target, name)(request, ctx)


async def _delegate_stream(
    target: object | None, what: str, name: str, request: Any, ctx: Context
) -> AsyncIterator[Any]:
    if target is None:
        await ctx.abort(grpc.StatusCode.UNIMPLEMENTED, f"this router runs without {what}")
    result = getattr(target, name)(request, ctx)
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """`bus` and `pipeline` are servicer-shaped: they implement the RouterService methods
    they own with the same names and (request, context) signatures."""

    def __init__(
        self,
        registry: Registry,
        watcher: HealthWatcher,
        table: RoutingTable,
        catalog: Catalog,
        warnings: WarningBoard,
        *,
        bus: object | None = None,
        pipeline: object | None = None,
    ) -> None:
        self.registry = registry
        self.watcher = watcher
        self.table = table
        self.catalog = catalog
        self.warnings = warnings
        self.bus = bus
        self.pipeline = pipeline
        self.started_at = time.time()
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End the registration streams cleanly before the server stops."""
        self._closing.set()

    async def _next(self, requests: AsyncIterator[Any]) -> Any:
        """The next request, or None when the stream ended or the router is closing."""
        following = asyncio.ensure_future(anext(requests, None))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({following, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if not following.done():
            following.cancel()
            return None
        return following.result()

    # -- registration ---------------------------------------------------------------------

    async def Register(
        self, request_iterator: AsyncIterator[router_pb2.RegisterRequest], context: Context
    ) -> AsyncIterator[router_pb2.RegisterResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        if first.WhichOneof("kind") != "announce":
            await abort_with(
                context,
                InvalidArgument(
                    "the first message on the Register stream must be an announce",
                    details=[bad_request({"announce": "required as the first message"})],
                ),
            )
        try:
            entry = self.registry.register(first.announce, dynamic=True)
        except MeshError as err:
            await abort_with(context, err)
        try:
            # Checked before the answer: the first call to it must not meet "unknown".
            await self.watcher.check_now(entry)
            self.watcher.watch(entry)
            yield router_pb2.RegisterResponse(
                registered=router_pb2.Registered(
                    module=entry.name, status=entry.status, reason=entry.status_reason
                )
            )
            requests = aiter(request_iterator)
            while (request := await self._next(requests)) is not None:
                kind = request.WhichOneof("kind")
                if kind == "health":
                    self.registry.set_reported_health(entry, request.health)
                elif kind == "heartbeat":
                    now = timestamp_pb2.Timestamp()
                    now.GetCurrentTime()
                    yield router_pb2.RegisterResponse(heartbeat=router_pb2.Heartbeat(sent_at=now))
        finally:
            if self.registry.get(entry.name) is entry:
                self.watcher.stop_watching(entry.name)
            self.registry.stream_closed(entry.name, entry.generation)

    # -- status and routing ---------------------------------------------------------------

    async def GetStatus(
        self, request: router_pb2.GetStatusRequest, context: Context
    ) -> router_pb2.GetStatusResponse:
        response = build_status(self.registry, self.catalog, self.warnings, self.started_at)
        consumers_info = getattr(self.bus, "consumers_info", None)
        if callable(consumers_info):
            response.consumers.extend(consumers_info())
        last_sequence = getattr(self.bus, "last_sequence", None)
        if isinstance(last_sequence, int):
            response.last_sequence = last_sequence
        # The bus and pipeline may add more (dead letters, runs in flight).
        for part in (self.bus, self.pipeline):
            fill = getattr(part, "fill_status", None)
            if fill is not None:
                result = fill(response)
                if inspect.isawaitable(result):
                    await result
        return response

    async def WatchRoutingTable(
        self, request: router_pb2.WatchRoutingTableRequest, context: Context
    ) -> AsyncIterator[router_pb2.WatchRoutingTableResponse]:
        async for table in self.table.watch():
            yield table

    # -- event bus --------------------------------------------------------------------------

    async def Publish(self, request: Any, context: Context) -> Any:
        return await _delegate_unary(self.bus, "an event bus", "Publish", request, context)

    async def PublishStream(self, request_iterator: Any, context: Context) -> Any:
        async for item in _delegate_stream(
            self.bus, "an event bus", "PublishStream", request_iterator, context
        ):
            yield item

    async def Subscribe(self, request_iterator: Any, context: Context) -> Any:
        async for item in _delegate_stream(
            self.bus, "an event bus", "Subscribe", request_iterator, context
        ):
            yield item

    async def ListEvents(self, request: Any, context: Context) -> Any:
        return await _delegate_unary(self.bus, "an event bus", "ListEvents", request, context)

    async def ReplayEvents(self, request: Any, context: Context) -> Any:
        async for item in _delegate_stream(
            self.bus, "an event bus", "ReplayEvents", request, context
        ):
            yield item

    async def ListDeadLetters(self, request: Any, context: Context) -> Any:
        return await _delegate_unary(self.bus, "an event bus", "ListDeadLetters", request, context)

    async def GetDeadLetter(self, request: Any, context: Context) -> Any:
        return await _delegate_unary(self.bus, "an event bus", "GetDeadLetter", request, context)

    async def ReplayDeadLetters(self, request: Any, context: Context) -> Any:
        return await _delegate_unary(
            self.bus, "an event bus", "ReplayDeadLetters", request, context
        )

    # -- pipeline ---------------------------------------------------------------------------

    async def ListPipelineRuns(self, request: Any, context: Context) -> Any:
        return await _delegate_unary(
            self.pipeline, "a pipeline", "ListPipelineRuns", request, context
        )

    async def GetPipelineRun(self, request: Any, context: Context) -> Any:
        return await _delegate_unary(
            self.pipeline, "a pipeline", "GetPipelineRun", request, context
        )
