"""RouterService with only the bus RPCs, for processes and tests that run the bus alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from soulspot.router.v1 import router_pb2, router_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from router.bus.event_bus import EventBus

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class BusOnlyRouter(router_pb2_grpc.RouterServiceServicer):
    """RouterService with the bus RPCs; every other RPC stays UNIMPLEMENTED here.

    Streaming RPCs are async generator functions (not functions returning one): the kit's
    server interceptors tell streaming behaviours apart that way."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    async def _unimplemented(self, context: Context) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "this process serves only the event bus (router.bus)"
        )

    async def _unimplemented_stream(self, context: Context) -> AsyncIterator[Any]:
        await self._unimplemented(context)
        yield None  # pragma: no cover - abort raised above

    async def Register(self, request_iterator: Any, context: Context) -> AsyncIterator[Any]:
        async for response in self._unimplemented_stream(context):
            yield response

    async def GetStatus(self, request: Any, context: Context) -> Any:
        return await self._unimplemented(context)

    async def WatchRoutingTable(self, request: Any, context: Context) -> AsyncIterator[Any]:
        async for response in self._unimplemented_stream(context):
            yield response

    async def ListPipelineRuns(self, request: Any, context: Context) -> Any:
        return await self._unimplemented(context)

    async def GetPipelineRun(self, request: Any, context: Context) -> Any:
        return await self._unimplemented(context)

    async def Publish(
        self, request: router_pb2.PublishRequest, context: Context
    ) -> router_pb2.PublishResponse:
        return await self._bus.Publish(request, context)

    async def PublishStream(
        self, request: AsyncIterator[router_pb2.PublishStreamRequest], context: Context
    ) -> AsyncIterator[router_pb2.PublishStreamResponse]:
        async for response in self._bus.PublishStream(request, context):
            yield response

    async def Subscribe(
        self, request: AsyncIterator[router_pb2.SubscribeRequest], context: Context
    ) -> AsyncIterator[router_pb2.SubscribeResponse]:
        async for response in self._bus.Subscribe(request, context):
            yield response

    async def ListEvents(
        self, request: router_pb2.ListEventsRequest, context: Context
    ) -> router_pb2.ListEventsResponse:
        return await self._bus.ListEvents(request, context)

    async def ReplayEvents(
        self, request: router_pb2.ReplayEventsRequest, context: Context
    ) -> AsyncIterator[router_pb2.ReplayEventsResponse]:
        async for response in self._bus.ReplayEvents(request, context):
            yield response

    async def ListDeadLetters(
        self, request: router_pb2.ListDeadLettersRequest, context: Context
    ) -> router_pb2.ListDeadLettersResponse:
        return await self._bus.ListDeadLetters(request, context)

    async def GetDeadLetter(
        self, request: router_pb2.GetDeadLetterRequest, context: Context
    ) -> router_pb2.GetDeadLetterResponse:
        return await self._bus.GetDeadLetter(request, context)

    async def ReplayDeadLetters(
        self, request: router_pb2.ReplayDeadLettersRequest, context: Context
    ) -> router_pb2.ReplayDeadLettersResponse:
        return await self._bus.ReplayDeadLetters(request, context)
