"""RouterService (deprecated): each RPC handed to the one servicer of the service that owns it
now (RegistryService, EventBusService, StatusService, PipelineRunService), for existing
callers until the next major version removes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from soulspot.router.v1 import router_pb2, router_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from router.api.registry_service import RegistryServicer
    from router.api.status_service import StatusServicer
    from router.bus.event_bus import EventBus
    from router.pipeline.engine import Pipeline

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterServiceDelegate(router_pb2_grpc.RouterServiceServicer):
    """RouterService over the servicers of the services with one job each. A part this process
    does not run (the bus process runs only the bus; a router may run without a pipeline)
    answers UNIMPLEMENTED, saying so.

    Streaming RPCs are async generator functions (not functions returning one): the kit's
    server wrapping tells streaming behaviours apart that way."""

    def __init__(
        self,
        *,
        registry: RegistryServicer | None = None,
        bus: EventBus | None = None,
        status: StatusServicer | None = None,
        pipeline: Pipeline | None = None,
        process: str = "this router",
    ) -> None:
        self._registry = registry
        self._bus = bus
        self._status = status
        self._pipeline = pipeline
        self._process = process

    async def _missing(self, what: str, context: Context) -> NoReturn:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{self._process} runs without {what}")
        raise AssertionError("abort returned")  # pragma: no cover - abort raises

    async def _registry_part(self, context: Context) -> RegistryServicer:
        if self._registry is None:
            await self._missing("module registration", context)
        return self._registry

    async def _bus_part(self, context: Context) -> EventBus:
        if self._bus is None:
            await self._missing("an event bus", context)
        return self._bus

    async def _status_part(self, context: Context) -> StatusServicer:
        if self._status is None:
            await self._missing("a status service", context)
        return self._status

    async def _pipeline_part(self, context: Context) -> Pipeline:
        if self._pipeline is None:
            await self._missing("a pipeline", context)
        return self._pipeline

    # -- RegistryService --------------------------------------------------------------------

    async def Register(
        self, request_iterator: AsyncIterator[router_pb2.RegisterRequest], context: Context
    ) -> AsyncIterator[router_pb2.RegisterResponse]:
        part = await self._registry_part(context)
        async for response in part.Register(request_iterator, context):
            yield response

    async def WatchRoutingTable(
        self, request: router_pb2.WatchRoutingTableRequest, context: Context
    ) -> AsyncIterator[router_pb2.WatchRoutingTableResponse]:
        part = await self._registry_part(context)
        async for response in part.WatchRoutingTable(request, context):
            yield response

    # -- EventBusService --------------------------------------------------------------------

    async def Publish(
        self, request: router_pb2.PublishRequest, context: Context
    ) -> router_pb2.PublishResponse:
        part = await self._bus_part(context)
        return await part.Publish(request, context)

    async def PublishStream(
        self, request_iterator: AsyncIterator[router_pb2.PublishStreamRequest], context: Context
    ) -> AsyncIterator[router_pb2.PublishStreamResponse]:
        part = await self._bus_part(context)
        async for response in part.PublishStream(request_iterator, context):
            yield response

    async def Subscribe(
        self, request_iterator: AsyncIterator[router_pb2.SubscribeRequest], context: Context
    ) -> AsyncIterator[router_pb2.SubscribeResponse]:
        part = await self._bus_part(context)
        async for response in part.Subscribe(request_iterator, context):
            yield response

    async def ListEvents(
        self, request: router_pb2.ListEventsRequest, context: Context
    ) -> router_pb2.ListEventsResponse:
        part = await self._bus_part(context)
        return await part.ListEvents(request, context)

    async def ReplayEvents(
        self, request: router_pb2.ReplayEventsRequest, context: Context
    ) -> AsyncIterator[router_pb2.ReplayEventsResponse]:
        part = await self._bus_part(context)
        async for response in part.ReplayEvents(request, context):
            yield response

    async def ListDeadLetters(
        self, request: router_pb2.ListDeadLettersRequest, context: Context
    ) -> router_pb2.ListDeadLettersResponse:
        part = await self._bus_part(context)
        return await part.ListDeadLetters(request, context)

    async def GetDeadLetter(
        self, request: router_pb2.GetDeadLetterRequest, context: Context
    ) -> router_pb2.GetDeadLetterResponse:
        part = await self._bus_part(context)
        return await part.GetDeadLetter(request, context)

    async def ReplayDeadLetters(
        self, request: router_pb2.ReplayDeadLettersRequest, context: Context
    ) -> router_pb2.ReplayDeadLettersResponse:
        part = await self._bus_part(context)
        return await part.ReplayDeadLetters(request, context)

    # -- StatusService ----------------------------------------------------------------------

    async def GetStatus(
        self, request: router_pb2.GetStatusRequest, context: Context
    ) -> router_pb2.GetStatusResponse:
        part = await self._status_part(context)
        return await part.GetStatus(request, context)

    # -- PipelineRunService -----------------------------------------------------------------

    async def ListPipelineRuns(
        self, request: router_pb2.ListPipelineRunsRequest, context: Context
    ) -> router_pb2.ListPipelineRunsResponse:
        part = await self._pipeline_part(context)
        return await part.ListPipelineRuns(request, context)

    async def GetPipelineRun(
        self, request: router_pb2.GetPipelineRunRequest, context: Context
    ) -> router_pb2.GetPipelineRunResponse:
        part = await self._pipeline_part(context)
        return await part.GetPipelineRun(request, context)
