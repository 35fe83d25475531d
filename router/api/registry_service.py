"""RegistryService: modules register on a long-lived stream, and clients that call modules
directly follow the routing table."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2

from router.security.quotas import StreamQuota, quota_key
from services.kit.rpc.errors import InvalidArgument, MeshError, abort_with, bad_request
from soulspot.router.v1 import registry_pb2, registry_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from router.routing.health_watch import HealthWatcher
    from router.routing.registry import Registry
    from router.routing.routing_table import RoutingTable
    from router.security.caller import Callers

log = logging.getLogger("soulspot.router.registry_service")
Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Register and WatchRoutingTable over the router's registry, health watcher and table.

    Streaming RPCs are async generator functions (not functions returning one): the kit's
    server wrapping tells streaming behaviours apart that way."""

    def __init__(
        self,
        registry: Registry,
        watcher: HealthWatcher,
        table: RoutingTable,
        callers: Callers | None = None,
    ) -> None:
        self.registry = registry
        self.watcher = watcher
        self.table = table
        # None: every caller is taken at its word (a router without a policy, in tests).
        self.callers = callers
        self._closing = asyncio.Event()
        # Streams per caller: each holds a registry entry, a health watch and breaker series.
        self._streams = StreamQuota(
            registry.settings.max_register_streams_per_identity,
            setting="SOULSPOT_ROUTER__MAX_REGISTER_STREAMS_PER_IDENTITY",
            what="open Register streams",
        )

    def close(self) -> None:
        """End the registration streams cleanly before the server stops."""
        self._closing.set()

    async def _next(self, requests: AsyncIterator[Any], superseded: asyncio.Event) -> Any:
        """The next request, or None when the stream ended, the router is closing or a newer
        registration of the same identity replaced this one."""
        following = asyncio.ensure_future(anext(requests, None))
        closing = asyncio.ensure_future(self._closing.wait())
        replaced = asyncio.ensure_future(superseded.wait())
        try:
            await asyncio.wait({following, closing, replaced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            replaced.cancel()
        if not following.done():
            following.cancel()
            return None
        return following.result()

    async def Register(
        self, request_iterator: AsyncIterator[router_pb2.RegisterRequest], context: Context
    ) -> AsyncIterator[router_pb2.RegisterResponse]:
        key = quota_key(context)
        try:
            self._streams.acquire(key)
        except MeshError as err:
            await abort_with(context, err)
        try:
            async for response in self._register(request_iterator, context):
                yield response
        finally:
            self._streams.release(key)

    async def _register(
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
            caller = None
            if self.callers is not None:
                caller = self.callers.identify(context)
                self.callers.check_registration(
                    caller,
                    first.announce.name,
                    [(c.capability, c.priority) for c in first.announce.capabilities],
                )
            entry = self.registry.register(first.announce, dynamic=True, owner=caller)
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
            while (request := await self._next(requests, entry.superseded)) is not None:
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

    async def WatchRoutingTable(
        self, request: router_pb2.WatchRoutingTableRequest, context: Context
    ) -> AsyncIterator[router_pb2.WatchRoutingTableResponse]:
        async for table in self.table.watch():
            yield table
