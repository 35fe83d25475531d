"""The standard grpc.health.v1 service, plus the reason a service is not serving."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

OVERALL = ""  # the service name grpc.health.v1 uses for the whole server
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class KitHealthServicer(HealthServicer):
    """grpc-health-checking's aio servicer that also remembers why a service is down, and
    ends open Watch streams at shutdown (after they saw NOT_SERVING) so a watching router
    does not hold the server's grace period open."""

    def __init__(self) -> None:
        super().__init__()
        # Mirrors the library's private status table, plus the reason; the library starts
        # with the overall service SERVING.
        self._statuses: dict[str, tuple[bool, str | None]] = {OVERALL: (True, None)}
        self._closing = asyncio.Event()

    async def set_status(self, service: str, serving: bool, reason: str | None = None) -> None:
        if self._closing.is_set():
            return  # shutdown is final, as in the library
        self._statuses[service] = (serving, reason)
        status: int = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        await self.set(service, status)

    def status(self, service: str) -> tuple[bool, str | None] | None:
        """(serving, reason) for a known service, None for an unknown one."""
        return self._statuses.get(service)

    def statuses(self) -> dict[str, tuple[bool, str | None]]:
        return dict(self._statuses)

    async def enter_graceful_shutdown(self) -> None:
        if self._closing.is_set():
            return
        self._statuses = dict.fromkeys(self._statuses, (False, "shutting down"))
        await super().enter_graceful_shutdown()
        self._closing.set()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        writer = _ShieldedWriter(context)
        watch = asyncio.ensure_future(super().Watch(request, cast("Any", writer)))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({watch, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, closing):
                task.cancel()
            for task in (watch, closing):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await writer.flush()
        if self._closing.is_set() and writer.last_status != NOT_SERVING:
            await context.write(health_pb2.HealthCheckResponse(status=NOT_SERVING))


class _ShieldedWriter:
    """The servicer context as the library's Watch sees it: a write is never cut in half by
    cancelling the watcher (gRPC refuses a second write while one is pending)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._pending: asyncio.Future[None] | None = None
        self.last_status: int | None = None

    async def write(self, response: health_pb2.HealthCheckResponse) -> None:
        self._pending = asyncio.ensure_future(self._send(response))
        await asyncio.shield(self._pending)

    async def _send(self, response: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(response)
        self.last_status = response.status

    async def flush(self) -> None:
        if self._pending is not None:
            await self._pending

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
