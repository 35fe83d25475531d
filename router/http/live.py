"""Live events for the dashboard: one Subscribe stream fanned out to every SSE client.

One subscription per HTTP app, not one per browser tab: subscribers sharing a durable name
compete for events, and a consumer per tab would leave a consumer behind for every page
ever opened. The consumer name is random per app instance and starts at new events.
A slow browser never holds the stream up: its queue drops the oldest event when full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

from router.http.convert import event_json
from services.kit.events.client import EventHandlers, Subscriber
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

    from soulspot.events.v1 import envelope_pb2

log = logging.getLogger("soulspot.router.http")

LIVE_EVENT_TYPES = ("download.*", "track.ready")
CLIENT_QUEUE = 256


class LiveHub:
    """Owns the subscription while the app runs; `listen()` gives each client a queue."""

    def __init__(self, channel: grpc.aio.Channel, consumer: str | None = None) -> None:
        self.consumer = consumer or f"dashboard-{secrets.token_hex(4)}"
        self._channel = channel
        self._clients: set[asyncio.Queue[dict[str, Any]]] = set()
        self._subscriber: Subscriber | None = None
        self._lock = asyncio.Lock()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def _ensure_started(self) -> None:
        async with self._lock:
            if self._subscriber is not None:
                return
            handlers = EventHandlers()
            for pattern in LIVE_EVENT_TYPES:
                handlers.add(pattern, self._on_event)
            self._subscriber = Subscriber(
                self._channel,
                consumer=self.consumer,
                handlers=handlers,
                start=router_pb2.START_POSITION_NEW,
                instance="dashboard",
            )
            await self._subscriber.start()

    async def _on_event(self, _payload: Message, envelope: envelope_pb2.EventEnvelope) -> None:
        self.broadcast(event_json(envelope))

    def broadcast(self, item: dict[str, Any]) -> None:
        for queue in self._clients:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(item)

    async def wait_connected(self, within_s: float) -> bool:
        """True once the subscription is open (for tests and the first SSE comment)."""
        if self._subscriber is None:
            return False
        try:
            await self._subscriber.wait_connected(within_s)
        except TimeoutError:
            return False
        return True

    @contextlib.asynccontextmanager
    async def listen(self) -> Any:
        """A queue receiving every live event while the block runs."""
        await self._ensure_started()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        try:
            yield queue
        finally:
            self._clients.discard(queue)

    async def close(self) -> None:
        async with self._lock:
            if self._subscriber is not None:
                await self._subscriber.stop()
                self._subscriber = None
