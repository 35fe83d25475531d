"""Direct mode: call modules straight from the router's routing table, with the router's
fallback order, and through the router whenever the table is missing or stale."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc
from google.protobuf import descriptor_pool

from services.kit.observability import tracing
from services.kit.rpc import context as ctx
from services.kit.rpc.channel import CHANNEL_OPTIONS, open_channel
from services.kit.rpc.policy import may_fall_back
from services.kit.support.backoff import Backoff, BackoffPolicy
from soulspot.options.v1 import options_pb2
from soulspot.router.v1 import registry_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from google.protobuf.message import Message

log = logging.getLogger("soulspot.direct")

_M = TypeVar("_M", bound="Message")
# Rewatching the routing table: short, since calls go through the router meanwhile.
_WATCH_BACKOFF = BackoffPolicy(initial_s=0.1, cap_s=2.0, jitter="equal")
_MODULE_CHANNEL_OPTIONS = (
    *CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True, slots=True)
class _Provider:
    module: str
    address: str
    priority: int


def _idempotent(method: str) -> bool:
    """The method's capability option says a second module may repeat it."""
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    except KeyError:
        return False
    options = descriptor.GetOptions()
    return options.HasExtension(options_pb2.capability) and bool(
        options.Extensions[options_pb2.capability].idempotent
    )


def _context_metadata() -> tuple[tuple[str, str], ...]:
    """The caller's correlation id, when it has one. A caller without (a script, the CLI)
    lets the module start one, as a plain stub call would: the module echoes it in its
    trailing metadata either way. The traceparent is per attempt (`_attempt`)."""
    correlation_id = ctx.current_correlation_id()
    return () if correlation_id is None else ((ctx.CORRELATION_ID_KEY, correlation_id),)


async def _attempt(
    call: Any,
    method: str,
    payload: bytes,
    timeout: float | None,  # noqa: ASYNC109 (the call's gRPC deadline)
    metadata: tuple[tuple[str, str], ...],
) -> Any:
    """One call; inside traced work, as a child of the caller's span with a CLIENT span of
    its own (the callee's span hangs under it)."""
    parent = ctx.current_traceparent()
    if parent is None or any(k == ctx.TRACEPARENT_KEY for k, _ in metadata):
        return await call(payload, timeout=timeout, metadata=metadata)
    sent = parent.child()
    with tracing.client_span(method, sent=sent, parent=parent):
        return await call(
            payload, timeout=timeout, metadata=(*metadata, (ctx.TRACEPARENT_KEY, str(sent)))
        )


class DirectClient:
    """`await client.call("/soulspot.capabilities.v1.SearchService/SearchTrack", request,
    SearchTrackResponse)` answers from the best module directly while the routing table
    streamed by the router is fresh (younger than its ttl), else through the router."""

    def __init__(
        self,
        router_address: str,
        *,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router_address = router_address
        self._ttl_override = ttl
        self._clock = clock
        self._routes: dict[str, list[_Provider]] = {}
        self._ttl = 0.0
        self._received_at: float | None = None
        self.version = 0
        self._router: grpc.aio.Channel | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._callables: dict[tuple[str, str, Any], Any] = {}
        self._turns = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._updated = asyncio.Event()
        self._idempotent: dict[str, bool] = {}

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._router is None:
            self._router = open_channel(self.router_address, interceptors=())
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._callables.clear()
        if self._router is not None:
            await self._router.close()
            self._router = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for_table(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
        """Whether a routing table arrived within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not self.fresh:
                    self._updated.clear()
                    await self._updated.wait()
        except TimeoutError:
            return False
        return True

    @property
    def fresh(self) -> bool:
        if self._received_at is None:
            return False
        return self._clock() - self._received_at < self._ttl

    def providers(self, method: str) -> list[str]:
        return [p.module for p in self._routes.get(method, ())]

    def _apply(self, table: router_pb2.WatchRoutingTableResponse) -> None:
        self._routes = {
            route.method: [_Provider(p.module, p.address, p.priority) for p in route.providers]
            for route in table.routes
        }
        ttl = table.ttl.ToNanoseconds() / 1e9
        self._ttl = self._ttl_override if self._ttl_override is not None else ttl
        self._received_at = self._clock()
        self.version = table.version
        self._updated.set()

    async def _watch(self) -> None:
        assert self._router is not None
        stub = registry_pb2_grpc.RegistryServiceStub(self._router)
        backoff = Backoff(_WATCH_BACKOFF)
        while True:
            try:
                async for table in stub.WatchRoutingTable(router_pb2.WatchRoutingTableRequest()):
                    self._apply(table)
                    backoff.reset()
            except grpc.aio.AioRpcError as err:
                log.debug("routing table stream failed: %s", err.code().name)
            # The table keeps its age: once older than its ttl, calls go through the router.
            await backoff.wait()

    # -- calls --------------------------------------------------------------------------

    def _order(self, method: str) -> list[_Provider]:
        providers = self._routes.get(method)
        if not providers or not self.fresh:
            return []
        if len(providers) < 2:
            return providers
        turn = next(self._turns)
        out: list[_Provider] = []
        for _priority, group_iter in itertools.groupby(providers, key=lambda p: p.priority):
            group = list(group_iter)
            shift = turn % len(group)
            out.extend(group[shift:] + group[:shift])
        return out

    def _callable(self, address: str | None, method: str, response_type: type[_M]) -> Any:
        key = (address or "", method, response_type)
        found = self._callables.get(key)
        if found is None:
            channel: grpc.aio.Channel | None
            if address is None:
                channel = self._router
                if channel is None:
                    raise RuntimeError("DirectClient.start() was not called")
            else:
                channel = self._channels.get(address)
                if channel is None:
                    # The process's transport (mutual TLS in the mesh), without the kit's
                    # interceptors: this client attaches the call context itself.
                    channel = open_channel(
                        address, interceptors=(), options=_MODULE_CHANNEL_OPTIONS
                    )
                    self._channels[address] = channel
            found = channel.unary_unary(method, response_deserializer=response_type.FromString)
            self._callables[key] = found
        return found

    def _is_idempotent(self, method: str) -> bool:
        found = self._idempotent.get(method)
        if found is None:
            found = self._idempotent[method] = _idempotent(method)
        return found

    async def call(
        self,
        method: str,
        request: Message,
        response_type: type[_M],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the call's gRPC deadline)
        metadata: Sequence[tuple[str, str]] = (),
    ) -> _M:
        """One unary capability call; raises grpc.aio.AioRpcError like a stub would."""
        payload = request.SerializeToString()
        md = (*metadata, *_context_metadata())
        loop = asyncio.get_running_loop()
        ends = None if timeout is None else loop.time() + timeout
        for provider in self._order(method):
            remaining = None if ends is None else ends - loop.time()
            if remaining is not None and remaining <= 0:
                break
            call = self._callable(provider.address, method, response_type)
            try:
                response: _M = await _attempt(call, method, payload, remaining, md)
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if may_fall_back(
                    code,
                    idempotent=self._is_idempotent(method),
                    time_left_s=None if ends is None else ends - loop.time(),
                ):
                    continue
                raise
            return response
        # No fresh table, no route, or every module failed: the router knows more.
        remaining = None if ends is None else max(0.0, ends - loop.time())
        router_call = self._callable(None, method, response_type)
        result: _M = await _attempt(router_call, method, payload, remaining, md)
        return result
