"""Prometheus metrics every process of the mesh records, and their /metrics endpoint.

Every `MeshMetrics` owns its own `CollectorRegistry` instead of prometheus_client's global
one, so several servers in one test process count apart and a second instance never fails
with "duplicated timeseries". A process normally uses one instance, the process default
(`default_metrics()`); `event_handled` writes to it without an instance passed in.

Metric names (all prefixed `soulspot_`):

    events_handled_total{event_type,outcome}              handler runs in a module
    event_handling_duration_seconds{event_type}
    rpc_server_handled_total{service,method,code}         every RPC a KitServer answered
    rpc_server_handling_seconds{service,method}

The router adds its own series (forwarded calls, breakers, the event bus, the pipeline) to the
same registry: router/metrics.py.

A module's metrics endpoint is off unless `SOULSPOT_<MODULE>__METRICS_ADDRESS` is set
(`host:port`, or `auto` for the module's gRPC port + 1000 on the same host: 51061 for
spotify's 50061). Off by default because a module's gRPC port may be 0 (tests) and a second
listening port per process is a cost nobody asked for; the router always serves `/metrics`
on its HTTP address.
"""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from services.kit.observability.tracing import TracingServerInterceptor
from services.kit.rpc.errors import MeshError
from services.kit.rpc.handler_wrapping import wrap_handler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

# Calls inside the mesh are loopback or LAN hops; the default buckets start at 5 ms and
# would put every healthy call in the first bucket.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

METRICS_PORT_OFFSET = 1000


class MeshMetrics:
    """The series every process records, on a registry of its own (others may add theirs)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.handled = Counter(
            "soulspot_events_handled",
            "Event handler runs in a module, by outcome (ok, error, duplicate).",
            ("event_type", "outcome"),
            registry=r,
        )
        self.handle_seconds = Histogram(
            "soulspot_event_handling_duration_seconds",
            "Time one event handler took.",
            ("event_type",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rpcs = Counter(
            "soulspot_rpc_server_handled",
            "RPCs answered by this process's gRPC server, by status code.",
            ("service", "method", "code"),
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "soulspot_rpc_server_handling_seconds",
            "Time from an RPC's start to its status (whole stream for streaming RPCs).",
            ("service", "method"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # -- modules: event handlers ----------------------------------------------------------------

    def event_handled(self, event_type: str, outcome: str, seconds: float | None = None) -> None:
        self.handled.labels(event_type, outcome).inc()
        if seconds is not None:
            self.handle_seconds.labels(event_type).observe(seconds)

    # -- every server ---------------------------------------------------------------------------

    def record_rpc(self, full_method: str, code: str, seconds: float) -> None:
        service, method = split_method(full_method)
        self.rpcs.labels(service, method, code).inc()
        self.rpc_seconds.labels(service, method).observe(seconds)

    def server_interceptor(self) -> MetricsServerInterceptor:
        return MetricsServerInterceptor(self)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def split_method(full_method: str) -> tuple[str, str]:
    """Split "/pkg.Service/Method" into ("pkg.Service", "Method")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


# ---------------------------------------------------------------------------------------------
# The process default and module-level shortcuts

_default: MeshMetrics | None = None


def default_metrics() -> MeshMetrics:
    """This process's metrics, created on first use."""
    global _default
    if _default is None:
        _default = MeshMetrics()
    return _default


def use_metrics(metrics: MeshMetrics) -> MeshMetrics:
    """Make `metrics` the process default (the router does this with its own instance)."""
    global _default
    _default = metrics
    return metrics


def event_handled(event_type: str, outcome: str, seconds: float | None = None) -> None:
    default_metrics().event_handled(event_type, outcome, seconds)


# ---------------------------------------------------------------------------------------------
# Server interceptor


class MetricsServerInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC by method and status code and observes its duration.

    Placed after the kit's context interceptor (KitServer puts that one first), so it sees
    the handler's own exceptions before they are turned into statuses: it works the code out
    the same way.
    """

    def __init__(self, metrics: MeshMetrics) -> None:
        self.metrics = metrics
        self._recorders: dict[str, _RpcRecorder] = {}

    def recorder(self, full_method: str) -> Callable[[grpc.StatusCode | int, float], None]:
        """`record(code, seconds)` for one method, its labelled children cached: `.labels()`
        takes a lock and builds a key on every use, which a per-call path cannot afford."""
        found = self._recorders.get(full_method)
        if found is None:
            found = self._recorders[full_method] = _RpcRecorder(self.metrics, full_method)
        return found

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        around = functools.partial(self._scope, handler_call_details.method)
        return wrap_handler(handler, around)

    @asynccontextmanager
    async def _scope(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], _request: object
    ) -> AsyncIterator[None]:
        started = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            yield
        except MeshError as err:
            code = err.code
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = context.code()
            raise
        except Exception:
            code = context.code()
            if code is None or code == grpc.StatusCode.OK:
                code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            if code is None:
                code = context.code() or grpc.StatusCode.OK
            self.recorder(method)(code, time.perf_counter() - started)


class _RpcRecorder:
    """`MeshMetrics.record_rpc` for one method, with its labelled children kept."""

    __slots__ = ("_by_code", "_method", "_metrics", "_seconds", "_service")

    def __init__(self, metrics: MeshMetrics, full_method: str) -> None:
        self._metrics = metrics
        self._service, self._method = split_method(full_method)
        self._seconds = metrics.rpc_seconds.labels(self._service, self._method)
        self._by_code: dict[grpc.StatusCode | int, Counter] = {}

    def __call__(self, code: grpc.StatusCode | int, seconds: float) -> None:
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._by_code[code] = self._metrics.rpcs.labels(
                self._service, self._method, _code_name(code)
            )
        counter.inc()
        self._seconds.observe(seconds)


def server_interceptors(metrics: MeshMetrics | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The observability interceptors for a KitServer's `interceptors=`: RPC metrics (on
    `metrics`, default: the process default) and a tracing span per RPC (idle unless
    tracing is configured)."""
    return [(metrics or default_metrics()).server_interceptor(), TracingServerInterceptor()]


def _code_name(code: grpc.StatusCode | int) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    # context.code() may hand back the raw integer a handler passed to set_code.
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return "UNKNOWN"


# ---------------------------------------------------------------------------------------------
# /metrics over HTTP


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving `registry` in the Prometheus text format."""

    async def handle(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        response = web.Response(body=body)
        # Set whole: aiohttp's content_type= refuses a value carrying parameters.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handle


async def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve `/metrics` on host:port (0 picks a free port; see `bound_port`).

    Stop it with `await runner.cleanup()`.
    """
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner's first site listens on (the real one when 0 was asked for)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the runner has no listening TCP site")


def module_metrics_address(value: str, grpc_host: str, grpc_port: int) -> tuple[str, int] | None:
    """Where a module serves /metrics, given its `metrics_address` setting
    (`SOULSPOT_<MODULE>__METRICS_ADDRESS`); None = off.

    "auto" means the gRPC host and the gRPC port + 1000; a bare port means the gRPC host.
    """
    value = value.strip()
    if not value or value.lower() in ("off", "none", "false", "0"):
        return None
    if value.lower() == "auto":
        if grpc_port == 0:
            return None
        return grpc_host, grpc_port + METRICS_PORT_OFFSET
    if ":" not in value:
        return grpc_host, int(value)
    host, _, port = value.rpartition(":")
    return host or grpc_host, int(port)


async def start_module_metrics(
    grpc_host: str, grpc_port: int, metrics: MeshMetrics | None = None, *, address: str = ""
) -> tuple[web.AppRunner, str] | None:
    """Start a module's /metrics endpoint when `address` (its metrics_address setting) says
    so: (runner, "host:port") or None."""
    where = module_metrics_address(address, grpc_host, grpc_port)
    if where is None:
        return None
    host, port = where
    runner = await start_metrics_server((metrics or default_metrics()).registry, host, port)
    return runner, f"{host}:{bound_port(runner)}"
