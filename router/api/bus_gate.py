"""The bus gate: while the router waits for its event log (NATS JetStream out of reach at
start), calls that need the log answer UNAVAILABLE saying what the router waits for.

The router serves before its log answers (see RouterApp.start_bus): registration, the
capability proxy, xDS and status need no NATS. The event bus's, the pipeline's and the
playlist watches' RPCs do (on JetStream the watches live there too): their handlers are
wrapped by `BusGate.wrapper()` when they are added to the server, so they refuse cleanly (the
kit's subscribers and publishers retry UNAVAILABLE) instead of reaching a store that is not
open.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from services.kit.rpc.errors import Unavailable
from services.kit.rpc.handler_wrapping import wrap_handler
from services.kit.support.timestamps import timestamp_at
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection

    import grpc

    Handler = grpc.RpcMethodHandler[Any, Any]
    Wrap = Callable[[str, Handler], Handler]


class BusGate:
    """Open unless `close(reason)` was called; `open()` lets calls through again."""

    def __init__(self) -> None:
        self.waiting_for: str | None = None
        self._closed_at = 0.0

    @property
    def is_open(self) -> bool:
        return self.waiting_for is None

    def close(self, reason: str) -> None:
        """Refuse gated calls with UNAVAILABLE and `reason` (e.g. "waiting for JetStream at
        nats://nats:4222")."""
        if self.waiting_for is None:
            self._closed_at = time.time()
        self.waiting_for = reason

    def open(self) -> None:
        self.waiting_for = None

    def warning(self) -> router_pb2.Warning:
        """The status warning while closed: what the router waits for and what it costs."""
        return router_pb2.Warning(
            module="router",
            operation="event bus",
            status=self.waiting_for or "ready",
            impact=(
                "publishes, subscriptions, event listings, the pipeline and playlist watches "
                "answer UNAVAILABLE until it answers; capability calls, registration and xDS go on"
            ),
            action="start NATS or check SOULSPOT_BUS__NATS_SERVERS and the router's logs",
            raised_at=timestamp_at(self._closed_at),
        )

    @contextlib.asynccontextmanager
    async def _around(self, context: Any, request: object | None) -> AsyncIterator[None]:
        if self.waiting_for is not None:
            raise Unavailable(f"the event bus is not ready: {self.waiting_for}")
        yield

    def wrapper(self, methods: Collection[str] | None = None) -> Wrap:
        """A `wrap(method, handler)` for services/kit/rpc/wrapping_server.WrappingServer:
        gates every method, or only those whose short name is in `methods`."""
        # Generic handlers hand out the same handler for a method on every call: wrapped once.
        wrapped: dict[str, tuple[Handler, Handler]] = {}

        def wrap(method: str, handler: Handler) -> Handler:
            if methods is not None and method.rsplit("/", 1)[-1] not in methods:
                return handler
            cached = wrapped.get(method)
            if cached is None or cached[0] is not handler:
                cached = (handler, wrap_handler(handler, self._around))
                wrapped[method] = cached
            return cached[1]

        return wrap
