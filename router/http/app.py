"""The router's HTTP side: the dashboard, its JSON API, live events and /metrics.

It is a gRPC client of the router's own address, like the CLI: everything it shows comes
through the router's public services, so it needs nothing internal and shows exactly what
other clients see. It is read-only (GET and HEAD), answers only requests naming loopback or a
configured host (router/http/guard.py), and its page runs under a Content-Security-Policy.

    /               the dashboard page (self-contained HTML)
    /healthz        200 while the router answers its health check, else 503
    /metrics        this process's Prometheus registry
    /api/status     StatusService.GetStatus as JSON
    /api/events     recent events (?limit=, ?type= pattern, repeatable)
    /api/dead-letters  dead letters (?limit=, ?consumer=)
    /api/pipeline-runs recent pipeline runs (?limit=)
    /api/albums     albums in progress (requested, not yet ready or failed)
    /api/stream     Server-Sent Events: live download.* and track.ready events
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from google.protobuf import json_format

from router.http.albums import ALBUM_EVENTS, albums_in_progress
from router.http.convert import dead_letter_json, event_json, status_json
from router.http.guard import install_guards
from router.http.live import LiveHub
from router.settings import RouterSection
from services.kit.observability.metrics import default_metrics, metrics_handler
from services.kit.rpc.channel import check_health, open_channel
from services.kit.support.settings import section_of
from soulspot.router.v1 import (
    event_bus_pb2_grpc,
    pipeline_runs_pb2_grpc,
    router_pb2,
    status_pb2_grpc,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client import CollectorRegistry

log = logging.getLogger("soulspot.router.http")

DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"
HTTP_ADDRESS_ENV = "SOULSPOT_ROUTER__HTTP_ADDRESS"
# Every API call is a loopback hop to the router; a router that does not answer this fast
# is reported as unreachable rather than leaving the page hanging.
CALL_TIMEOUT_S = 3.0
MAX_LIMIT = 500
SSE_KEEPALIVE_S = 15.0

CHANNEL: web.AppKey[grpc.aio.Channel] = web.AppKey("channel", grpc.aio.Channel)
# The async stub types exist only in the generated .pyi, so these keys carry no runtime type.
STATUS: web.AppKey[status_pb2_grpc.StatusServiceAsyncStub] = web.AppKey("status")
EVENT_BUS: web.AppKey[event_bus_pb2_grpc.EventBusServiceAsyncStub] = web.AppKey("event_bus")
PIPELINE_RUNS: web.AppKey[pipeline_runs_pb2_grpc.PipelineRunServiceAsyncStub] = web.AppKey(
    "pipeline_runs"
)
HUB: web.AppKey[LiveHub] = web.AppKey("hub", LiveHub)
SHUTDOWN: web.AppKey[asyncio.Event] = web.AppKey("shutdown", asyncio.Event)


def http_address(settings: object | None = None) -> tuple[str, int]:
    """(host, port) from settings.router.http_address, SOULSPOT_ROUTER__HTTP_ADDRESS or the
    default 127.0.0.1:8080."""
    value = section_of(settings, "router", RouterSection).http_address
    host, _, port = (value or DEFAULT_HTTP_ADDRESS).strip().rpartition(":")
    return host or "127.0.0.1", int(port)


def _page() -> bytes:
    return resources.files("router.http").joinpath("dashboard.html").read_bytes()


def _limit(request: web.Request, default: int = 50) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "limit must be a whole number", "field": "limit"}),
            content_type="application/json",
        ) from None
    if value < 1:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "limit must be at least 1", "field": "limit"}),
            content_type="application/json",
        )
    return min(value, MAX_LIMIT)


_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


def _unreachable(err: grpc.aio.AioRpcError) -> web.Response:
    return web.json_response(
        {"error": "router call failed", "code": err.code().name, "details": err.details() or ""},
        status=_HTTP_STATUS.get(err.code(), 503),
    )


async def index(_request: web.Request) -> web.Response:
    return web.Response(body=_page(), content_type="text/html", charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    if await check_health(request.app[CHANNEL], timeout=CALL_TIMEOUT_S):
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "router not serving or unreachable"}, status=503)


async def api_status(request: web.Request) -> web.Response:
    try:
        status = await request.app[STATUS].GetStatus(
            router_pb2.GetStatusRequest(), timeout=CALL_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as err:
        return _unreachable(err)
    return web.json_response(status_json(status))


async def api_events(request: web.Request) -> web.Response:
    query = router_pb2.ListEventsRequest(
        limit=_limit(request), event_types=request.query.getall("type", [])
    )
    if request.query.get("correlation_id"):
        query.correlation_id = request.query["correlation_id"]
    try:
        answer = await request.app[EVENT_BUS].ListEvents(query, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        return _unreachable(err)
    return web.json_response(
        {
            "events": [event_json(e) for e in answer.events],
            "next_page_token": answer.next_page_token,
        }
    )


async def api_dead_letters(request: web.Request) -> web.Response:
    query = router_pb2.ListDeadLettersRequest(
        limit=_limit(request), consumer=request.query.get("consumer", "")
    )
    try:
        answer = await request.app[EVENT_BUS].ListDeadLetters(query, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        return _unreachable(err)
    return web.json_response({"dead_letters": [dead_letter_json(d) for d in answer.dead_letters]})


async def api_pipeline_runs(request: web.Request) -> web.Response:
    query = router_pb2.ListPipelineRunsRequest(limit=_limit(request, 20))
    try:
        answer = await request.app[PIPELINE_RUNS].ListPipelineRuns(query, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        return _unreachable(err)
    runs: list[dict[str, Any]] = [
        json_format.MessageToDict(run, preserving_proto_field_name=True) for run in answer.runs
    ]
    return web.json_response({"runs": runs})


async def api_albums(request: web.Request) -> web.Response:
    query = router_pb2.ListEventsRequest(limit=500, event_types=[ALBUM_EVENTS])
    try:
        answer = await request.app[EVENT_BUS].ListEvents(query, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        return _unreachable(err)
    return web.json_response({"albums": albums_in_progress(reversed(answer.events))})


async def api_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            # Reverse proxies (nginx) buffer responses unless told not to.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    hub = request.app[HUB]
    shutdown = request.app[SHUTDOWN]
    async with hub.listen() as queue:
        connected = await hub.wait_connected(CALL_TIMEOUT_S)
        hello = {"consumer": hub.consumer, "connected": connected}
        await response.write(f"retry: 3000\nevent: hello\ndata: {json.dumps(hello)}\n\n".encode())
        while not shutdown.is_set():
            try:
                item = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
            except TimeoutError:
                # A comment line keeps idle proxies and the browser from dropping the stream.
                await response.write(b": keepalive\n\n")
                continue
            data = json.dumps(item, separators=(",", ":"))
            try:
                await response.write(f"event: {item['event_type']}\ndata: {data}\n\n".encode())
            except ConnectionResetError:
                break
    return response


def create_http_app(
    router_address: str,
    *,
    registry: CollectorRegistry | None = None,
    allowed_hosts: Iterable[str] = (),
) -> web.Application:
    """The HTTP app for a router at `router_address`; /metrics serves `registry` (default:
    this process's `default_metrics()` registry). It answers requests whose Host names
    loopback or one of `allowed_hosts`."""
    app = web.Application()
    install_guards(app, _page(), allowed_hosts)
    app[SHUTDOWN] = asyncio.Event()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(registry or default_metrics().registry))
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/dead-letters", api_dead_letters)
    app.router.add_get("/api/pipeline-runs", api_pipeline_runs)
    app.router.add_get("/api/stream", api_stream)
    app.router.add_get("/api/albums", api_albums)

    async def lifecycle(app: web.Application) -> Any:
        channel = open_channel(router_address)
        app[CHANNEL] = channel
        app[STATUS] = status_pb2_grpc.StatusServiceStub(channel)
        app[EVENT_BUS] = event_bus_pb2_grpc.EventBusServiceStub(channel)
        app[PIPELINE_RUNS] = pipeline_runs_pb2_grpc.PipelineRunServiceStub(channel)
        app[HUB] = LiveHub(channel)
        yield
        await app[HUB].close()
        await channel.close()

    async def on_shutdown(app: web.Application) -> None:
        # Open SSE streams would otherwise hold the shutdown until their keepalive fires.
        app[SHUTDOWN].set()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return app


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve `app` on host:port (0 picks a port: see services.kit.observability.metrics.bound_port).

    Stop with `await runner.cleanup()`.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise
    return runner


async def start_router_http(
    router_address: str, settings: object | None = None
) -> web.AppRunner | None:
    """The router process's HTTP side, next to its gRPC server at `router_address`.

    Returns None when it is switched off (SOULSPOT_ROUTER__HTTP_ADDRESS=off) or its port is
    taken: the dashboard is a window on the router, never a reason for routing to stop.
    """
    value = section_of(settings, "router", RouterSection).http_address
    if value.strip().lower() in ("off", "none", "false"):
        return None
    host, port = http_address(settings)
    grpc_host, _, grpc_port = router_address.rpartition(":")
    if grpc_host in ("0.0.0.0", "[::]", "::", ""):
        # A wildcard bind is reachable from here on loopback.
        router_address = f"127.0.0.1:{grpc_port}"
    try:
        allowed = section_of(settings, "router", RouterSection).http_allowed_hosts
        runner = await start_http(
            create_http_app(router_address, allowed_hosts=allowed), host, port
        )
    except OSError as err:
        fields = {
            "module": "router",
            "operation": "http",
            "status": "inactive",
            "impact": "no dashboard, no /metrics for the router",
            "action": f"free port {port} or set {HTTP_ADDRESS_ENV}",
        }
        # LogRecord reserves "module": the five fields travel together under "warning", as
        # in the router's other warnings, and all but "module" also at the top level.
        log.error(
            "dashboard and /metrics not served: cannot listen on %s:%d",
            host,
            port,
            extra={
                "warning": fields,
                **{k: v for k, v in fields.items() if k != "module"},
                "error": str(err),
            },
        )
        return None
    log.info(
        "dashboard on http://%s:%d/",
        host,
        port,
        extra={"address": f"{host}:{port}", "router_address": router_address},
    )
    return runner
