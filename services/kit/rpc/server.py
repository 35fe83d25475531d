"""KitServer: a grpc.aio server with the mesh's interceptors, health, reflection and a
graceful SIGTERM/SIGINT shutdown, the same in every module and the router."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any, Self

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kit.observability.metrics import MetricsServerInterceptor
from services.kit.observability.tracing import TracingServerInterceptor
from services.kit.rpc.channel import SERVER_OPTIONS
from services.kit.rpc.health import OVERALL, KitHealthServicer
from services.kit.rpc.interceptors import ContextServerInterceptor
from services.kit.rpc.request_decoding import decode_checked
from services.kit.rpc.validation import RequiredFieldsInterceptor, check_required
from services.kit.rpc.wrapping_server import WrappingServer
from services.kit.security.tls import Transport, current_transport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

_log = logging.getLogger(__name__)
DEFAULT_GRACE_S = 5.0


class KitServer:
    """One gRPC server process.

    Register services before `start()`: `add_service(register, *service_names)` where
    `register(server)` adds handlers (typically `lambda s: add_FooServicer_to_server(impl, s)`)
    and the names are the full service names for health and reflection. Health starts
    SERVING for each name unless `set_status` said otherwise first.
    """

    def __init__(
        self,
        name: str,
        address: str = "127.0.0.1:0",
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        validate_requests: bool = False,
        options: Sequence[tuple[str, int | str]] = (),
        grace_s: float = DEFAULT_GRACE_S,
        maximum_concurrent_rpcs: int | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.name = name
        # Mutual TLS as this process's identity, or plaintext; None: the process's transport
        # (services/kit/security/tls.py `use_transport`), read when the server starts.
        self._transport = transport
        self._address = address
        # Context first, so every call is correlated and logged; the caller's interceptors
        # (metrics, tracing) next, so they see refused requests too; validation last.
        # Leading metrics and tracing interceptors are folded into the context one: the
        # same work in one wrapper per call instead of three.
        rest = list(interceptors)
        metrics: MetricsServerInterceptor | None = None
        tracing: TracingServerInterceptor | None = None
        while rest:
            first = rest[0]
            if isinstance(first, MetricsServerInterceptor) and metrics is None and not tracing:
                metrics = first
            elif isinstance(first, TracingServerInterceptor) and tracing is None:
                tracing = first
            else:
                break
            rest.pop(0)
        self._context = ContextServerInterceptor(metrics=metrics, tracing=tracing)
        self._validate_requests = validate_requests
        # Only other interceptors need grpc.aio's interceptor chain; the kit's own work is
        # done by wrapping each handler as it is added (services/kit/rpc/wrapping_server.py).
        self._interceptors: list[grpc.aio.ServerInterceptor] = []
        if rest:
            self._interceptors = [self._context, *rest]
            if validate_requests:
                self._interceptors.append(RequiredFieldsInterceptor())
        merged: dict[str, int | str] = dict(SERVER_OPTIONS)
        merged.update(options)
        self._options = list(merged.items())
        self.grace_s = grace_s
        self._maximum_concurrent_rpcs = maximum_concurrent_rpcs
        self._registrars: list[Callable[[grpc.aio.Server], object]] = []
        self._decode_checked: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}
        self.service_names: list[str] = []
        self.health = KitHealthServicer()
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        # Whether the bound port speaks mutual TLS (known once started).
        self.secure = False
        self._stopping: asyncio.Task[None] | None = None

    def add_service(
        self, register: Callable[[grpc.aio.Server], object], *service_names: str
    ) -> None:
        if self._server is not None:
            raise RuntimeError("add_service after start(): gRPC cannot add services then")
        self._registrars.append(register)
        self.service_names.extend(service_names)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def address(self) -> str:
        """host:port as bound (the real port when the configured one was 0)."""
        host = self._address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def server(self) -> grpc.aio.Server:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._server

    async def set_status(self, service_name: str, serving: bool, reason: str | None = None) -> None:
        """Health of one service ("" is the whole server); the reason is kept for status RPCs."""
        await self.health.set_status(service_name, serving, reason)

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("start() called twice")
        # Created here, not in __init__: a grpc.aio server binds to the running loop.
        server = grpc.aio.server(
            interceptors=self._interceptors or None,
            options=self._options,
            maximum_concurrent_rpcs=self._maximum_concurrent_rpcs,
        )
        target: grpc.aio.Server = server
        if not self._interceptors:
            target = WrappingServer(server, self._wrap)
        for register in self._registrars:
            register(target)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, target)
        for service in self.service_names:
            if self.health.status(service) is None:
                await self.health.set_status(service, True)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), target
        )
        transport = self._transport or current_transport()
        credentials = transport.server_credentials() if transport is not None else None
        if credentials is None:
            self._port = server.add_insecure_port(self._address)
        else:
            self._port = server.add_secure_port(self._address, credentials)
        self.secure = credentials is not None
        self._server = server
        await server.start()
        _log.info(
            "%s serving on %s",
            self.name,
            self.address,
            extra={
                "module_name": self.name,
                "address": self.address,
                "services": self.service_names,
            },
        )
        return self._port

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        check = check_required if self._validate_requests else None
        # Built once per handler object, like the context wrapping: generic handlers hand out
        # the same handler for a method on every call, and the wrapped one is cached by it.
        cached = self._decode_checked.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, decode_checked(method, handler))
            self._decode_checked[method] = cached
        return self._context.wrap(method, cached[1], check)

    async def wait(self) -> None:
        """Until the server has stopped."""
        await self.server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING everywhere, refuse new calls, let in-flight calls
        finish within `grace` seconds (default `grace_s`), cancel the rest. Idempotent."""
        if self._server is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(
                self._stop(self.grace_s if grace is None else grace)
            )
        # shield: a caller giving up waiting must not cut the shutdown itself short.
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        _log.info("%s stopped", self.name, extra={"module_name": self.name})

    async def serve(self) -> None:
        """Start (if needed) and serve until SIGTERM or SIGINT, then stop gracefully."""
        if self._server is None:
            await self.start()
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)

        def on_signal(sig: signal.Signals) -> None:
            _log.info(
                "%s received %s, shutting down (grace %.1fs)",
                self.name,
                sig.name,
                self.grace_s,
                extra={"module_name": self.name, "signal": sig.name},
            )
            stop_requested.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            stopped = asyncio.ensure_future(self.wait())
            requested = asyncio.ensure_future(stop_requested.wait())
            try:
                await asyncio.wait({stopped, requested}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                requested.cancel()
            await self.stop()
            await stopped
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

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

    def health_status(self) -> dict[str, tuple[bool, str | None]]:
        """{service: (serving, reason)}, "" being the whole server."""
        return self.health.statuses()


__all__ = ["DEFAULT_GRACE_S", "OVERALL", "KitServer"]
