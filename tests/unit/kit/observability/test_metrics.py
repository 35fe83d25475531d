"""Metrics every process records: the server interceptor counts real RPCs by code, registries
stay apart, and /metrics serves the text format."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from services.kit.observability import metrics as m
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from tests.helpers.probe_service import SERVICE, add_probe, say


def _value(metrics: m.MeshMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_interceptor_counts_calls_by_code() -> None:
    metrics = m.MeshMetrics()
    server = KitServer("obs", interceptors=[metrics.server_interceptor()], grace_s=0.5)
    add_probe(server)
    async with server, open_channel(server.address) as channel:
        call = say(channel)
        assert await call(b"hello") == b"hello"
        assert await call(b"again") == b"again"
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await call(b"fail:NOT_FOUND")
        assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as crashed:
            await call(b"crash")
        assert crashed.value.code() == grpc.StatusCode.UNKNOWN

    handled = "soulspot_rpc_server_handled_total"
    assert _value(metrics, handled, service=SERVICE, method="Say", code="OK") == 2
    assert _value(metrics, handled, service=SERVICE, method="Say", code="NOT_FOUND") == 1
    assert _value(metrics, handled, service=SERVICE, method="Say", code="UNKNOWN") == 1
    count = _value(
        metrics, "soulspot_rpc_server_handling_seconds_count", service=SERVICE, method="Say"
    )
    assert count == 4


async def test_two_servers_count_apart() -> None:
    first, second = m.MeshMetrics(), m.MeshMetrics()
    servers = [
        KitServer("a", interceptors=[first.server_interceptor()], grace_s=0.5),
        KitServer("b", interceptors=[second.server_interceptor()], grace_s=0.5),
    ]
    for server in servers:
        add_probe(server)
    async with servers[0], servers[1], open_channel(servers[0].address) as channel:
        await say(channel)(b"only-first")
    labels = {"service": SERVICE, "method": "Say", "code": "OK"}
    assert _value(first, "soulspot_rpc_server_handled_total", **labels) == 1
    assert _value(second, "soulspot_rpc_server_handled_total", **labels) == 0


def test_module_level_shortcut_writes_to_the_current_default() -> None:
    original = m.default_metrics()
    earlier = m.use_metrics(m.MeshMetrics())
    current = m.use_metrics(m.MeshMetrics())
    try:
        m.event_handled("track.ready", "ok", 0.002)
    finally:
        m.use_metrics(original)
    handled = {"event_type": "track.ready", "outcome": "ok"}
    assert _value(current, "soulspot_events_handled_total", **handled) == 1
    assert _value(earlier, "soulspot_events_handled_total", **handled) == 0


def test_a_module_registry_holds_no_router_series() -> None:
    # A module's /metrics shows what it records, not empty router families.
    body = m.MeshMetrics().exposition().decode()
    assert "soulspot_rpc_server_handled_total" in body
    assert "soulspot_events_handled_total" in body
    assert "soulspot_capability_calls" not in body
    assert "soulspot_breaker_state" not in body
    assert "soulspot_events_published" not in body


async def test_metrics_endpoint_serves_text_format() -> None:
    metrics = m.MeshMetrics()
    metrics.event_handled("download.started", "ok")
    runner = await m.start_metrics_server(metrics.registry, "127.0.0.1", 0)
    try:
        port = m.bound_port(runner)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = await response.text()
    finally:
        await runner.cleanup()
    handled = 'soulspot_events_handled_total{event_type="download.started",outcome="ok"} 1.0'
    assert handled in body


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("off", None),
        ("auto", ("127.0.0.1", 51061)),
        ("9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9200", ("0.0.0.0", 9200)),
    ],
)
def test_module_metrics_address(value: str, expected: tuple[str, int] | None) -> None:
    assert m.module_metrics_address(value, "127.0.0.1", 50061) == expected
