"""The bus gate: while the router waits for its event log (NATS JetStream out of reach at
start), or has lost it since, calls that need the log answer UNAVAILABLE saying so and since
when. The detailed reason (the NATS servers, the connection's error) goes to the logs and the
health's reasons only: callers, and GetStatus (which any caller may ask), get a generic one
(`BusGate.public_reason`), as nothing of the deployment is theirs to know.

The router serves before its log answers (see RouterApp.start_bus): registration, the
capability proxy, xDS and status need no NATS. The event bus's, the pipeline's and the
playlist watches' RPCs do (on JetStream the watches live there too): their handlers are
wrapped by `BusGate.wrapper()` when they are added to the server, so they refuse cleanly (the
kit's subscribers and publishers retry UNAVAILABLE) instead of reaching a store that is not
open, or whose connection is down.

After start, `OutageHealth` follows the process's NATS connections (nats_links in
router/bus/jetstream/connection.py): while one is down the gate refuses, those services are
NOT_SERVING with the reason "JetStream at ... unreachable since ..." and GetStatus warns;
all of it ends when the connection is back. The overall health ("") stays SERVING: clients of
the router (the pipeline among them) read NOT_SERVING there as the router going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from router.bus.jetstream.connection import NatsLinks, nats_links
from router.bus.jetstream.startup import unreachable_since, utc_text
from services.kit.rpc.errors import Unavailable
from services.kit.rpc.handler_wrapping import wrap_handler
from services.kit.support.tasks import cancel_and_wait
from services.kit.support.timestamps import timestamp_at
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence

    import grpc

    Handler = grpc.RpcMethodHandler[Any, Any]
    Wrap = Callable[[str, Handler], Handler]
    SetStatus = Callable[[str, bool, str | None], Awaitable[None]]

_log = logging.getLogger(__name__)


class BusGate:
    """Open unless `close(reason)` (the start-up wait) or `lost(reason, since)` (an outage
    after start) was called; `open()` and `regained()` undo each."""

    def __init__(self) -> None:
        self.waiting_for: str | None = None
        self.unreachable: str | None = None
        self._closed_at = 0.0
        self._lost_at = 0.0

    @property
    def reason(self) -> str | None:
        """Why gated calls are refused (the start-up wait first), None while open."""
        return self.waiting_for or self.unreachable

    @property
    def is_open(self) -> bool:
        return self.reason is None

    def close(self, reason: str) -> None:
        """Refuse gated calls with UNAVAILABLE and `reason` (e.g. "waiting for JetStream at
        nats://nats:4222")."""
        if self.waiting_for is None:
            self._closed_at = time.time()
        self.waiting_for = reason

    def open(self) -> None:
        self.waiting_for = None

    def lost(self, reason: str, since: float) -> None:
        """Refuse gated calls with `reason` (e.g. "JetStream at ... unreachable since ..."):
        the log went out of reach at `since` (time.time()) after start."""
        self.unreachable = reason
        self._lost_at = since

    def regained(self) -> None:
        self.unreachable = None

    @property
    def since(self) -> float:
        """Since when (time.time()) gated calls are refused for `reason`."""
        return self._closed_at if self.waiting_for else self._lost_at

    def public_reason(self) -> str:
        """Why gated calls are refused, as callers are told: since when, and nothing of the
        servers or their errors (those are in the router's logs)."""
        return (
            "the event log (JetStream) is not reachable from this router since "
            f"{utc_text(self.since)}; retry"
        )

    def warning(self) -> router_pb2.Warning:
        """The status warning while closed: that the router waits for its log, since when,
        and what it costs (any caller may ask for status: no servers, no errors)."""
        return router_pb2.Warning(
            module="router",
            operation="event bus",
            status=self.public_reason() if self.reason else "ready",
            impact=(
                "publishes, subscriptions, event listings, the pipeline and playlist watches "
                "answer UNAVAILABLE until it answers; capability calls, registration and xDS go on"
            ),
            action="start NATS or check SOULSPOT_BUS__NATS_SERVERS and the router's logs",
            raised_at=timestamp_at(self.since),
        )

    @contextlib.asynccontextmanager
    async def _around(self, context: Any, request: object | None) -> AsyncIterator[None]:
        if self.reason is not None:
            raise Unavailable(self.public_reason())
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


class OutageHealth:
    """While a NATS connection of this process to `servers` is down (after start), `gate` is
    `lost` and `services` are NOT_SERVING, each with "JetStream at ... unreachable since ...";
    once every one is back, the gate is `regained` and they are SERVING. Never the overall
    health "" (see the module's text)."""

    def __init__(
        self,
        gate: BusGate,
        servers: Sequence[str],
        services: Sequence[str],
        set_status: SetStatus,
        *,
        links: NatsLinks = nats_links,
    ) -> None:
        if "" in services:
            raise ValueError("the overall health is not an outage's to change")
        self.gate = gate
        self.servers = list(servers)
        self.services = list(services)
        self._set_status = set_status
        self._links = links
        self._task: asyncio.Task[None] | None = None
        # A change reported while the health was being set: read the links once more.
        self._again = False

    def start(self) -> None:
        """Follow the links from now on (and apply how they are now: one may be down
        already)."""
        self._links.listeners.append(self._changed)
        self._changed()

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._links.listeners.remove(self._changed)
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def _changed(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._apply(), name="bus-outage-health")

    async def _apply(self) -> None:
        # One pass at a time, each reading the links as they are then: the last one wins.
        while True:
            self._again = False
            since = self._links.down_since(self.servers)
            was = self.gate.unreachable
            if since is None:
                if was is not None:
                    _log.info("JetStream at %s reachable again", ", ".join(self.servers))
                    self.gate.regained()
            else:
                reason = unreachable_since(self.servers, since)
                if reason != was:
                    _log.warning("%s: %s NOT_SERVING", reason, ", ".join(self.services))
                    self.gate.lost(reason, since)
            now = self.gate.unreachable
            if now != was:
                for service in self.services:
                    await self._set_status(service, now is None, now)
            if not self._again:
                return
