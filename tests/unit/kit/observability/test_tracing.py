"""Tracing: a caller's traceparent yields a server span and log lines with the same trace id;
event handling continues the envelope's trace; without an exporter nothing is set up."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.kit.observability import tracing
from services.kit.observability.logging import JsonFormatter
from services.kit.rpc import context as ctx
from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer
from soulspot.events.v1 import envelope_pb2
from tests.helpers.probe_service import add_probe, say

if TYPE_CHECKING:
    from collections.abc import Iterator

CALLER = ctx.TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("obs"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracing.configure_tracing("obs", spans)
    yield spans
    tracing.shutdown_tracing()


@pytest.fixture
def lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("obs.probe")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


async def test_server_span_and_log_share_the_callers_trace_id(
    exporter: InMemorySpanExporter, lines: _Lines
) -> None:
    server = KitServer("obs", interceptors=[tracing.TracingServerInterceptor()], grace_s=0.5)
    add_probe(server)
    async with server, open_channel(server.address) as channel:
        await say(channel)(b"traced", metadata=((ctx.TRACEPARENT_KEY, str(CALLER)),))
        with pytest.raises(grpc.aio.AioRpcError):
            await say(channel)(b"fail:NOT_FOUND", metadata=((ctx.TRACEPARENT_KEY, str(CALLER)),))

    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    ok, failed = spans
    assert ok.kind == SpanKind.SERVER
    assert ok.name == "obs.Probe/Say"
    assert format(ok.context.trace_id, "032x") == CALLER.trace_id
    assert ok.parent is not None
    assert format(ok.parent.span_id, "016x") == CALLER.span_id
    assert ok.attributes is not None
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert failed.attributes is not None
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not failed.status.is_ok

    handled = [line for line in lines.lines if "probe handling traced" in line]
    assert len(handled) == 1
    assert f'"trace_id": "{CALLER.trace_id}"' in handled[0]


async def test_a_call_made_inside_traced_work_has_a_client_span_the_server_hangs_under(
    exporter: InMemorySpanExporter,
) -> None:
    server = KitServer("obs", interceptors=[tracing.TracingServerInterceptor()], grace_s=0.5)
    add_probe(server)
    async with server, open_channel(server.address) as channel:
        with ctx.bind("corr-traced", CALLER):
            await say(channel)(b"inner")
            with pytest.raises(grpc.aio.AioRpcError):
                await say(channel)(b"fail:NOT_FOUND")
        await asyncio.sleep(0.05)  # client spans end once their call is done

    spans = exporter.get_finished_spans()
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    servers = {s.context.span_id: s for s in spans if s.kind == SpanKind.SERVER}
    assert len(clients) == 2
    assert len(servers) == 2
    for client in clients:
        assert client.name == "obs.Probe/Say"
        assert format(client.context.trace_id, "032x") == CALLER.trace_id
        assert client.parent is not None
        assert format(client.parent.span_id, "016x") == CALLER.span_id
        # The server span's parent is this client span: the trace tree has no gap.
        (served,) = [
            s
            for s in servers.values()
            if s.parent is not None and s.parent.span_id == client.context.span_id
        ]
        assert served.context.trace_id == client.context.trace_id
    ok, failed = sorted(clients, key=lambda s: s.start_time or 0)
    assert ok.attributes is not None
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert failed.attributes is not None
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not failed.status.is_ok


def test_a_direct_call_span_takes_the_ids_it_sends(exporter: InMemorySpanExporter) -> None:
    sent = CALLER.child()
    with tracing.client_span("/obs.Probe/Say", sent=sent, parent=CALLER):
        pass
    with (
        pytest.raises(RuntimeError),
        tracing.client_span("/obs.Probe/Say", sent=CALLER.child(), parent=CALLER),
    ):
        raise RuntimeError("the call went wrong")
    done, broken = exporter.get_finished_spans()
    assert done.kind == SpanKind.CLIENT
    assert format(done.context.span_id, "016x") == sent.span_id
    assert done.parent is not None
    assert format(done.parent.span_id, "016x") == CALLER.span_id
    assert done.status.is_ok
    assert not broken.status.is_ok


async def test_untraced_call_gets_a_span_matching_its_log_lines(
    exporter: InMemorySpanExporter, lines: _Lines
) -> None:
    server = KitServer("obs", interceptors=[tracing.TracingServerInterceptor()], grace_s=0.5)
    add_probe(server)
    async with server, open_channel(server.address) as channel:
        # No traceparent of our own: the kit's client interceptor starts a trace.
        await say(channel)(b"fresh")
    (span,) = exporter.get_finished_spans()
    trace_id = format(span.context.trace_id, "032x")
    assert trace_id != CALLER.trace_id
    (line,) = [line for line in lines.lines if "probe handling fresh" in line]
    assert f'"trace_id": "{trace_id}"' in line


def test_event_span_continues_the_envelopes_trace(exporter: InMemorySpanExporter) -> None:
    envelope = envelope_pb2.EventEnvelope(
        event_id="e-1",
        event_type="download.completed",
        correlation_id="corr-1",
        traceparent=str(CALLER),
    )
    with tracing.event_span(envelope, consumer="pipeline") as span:
        assert span is not None
        bound = ctx.current_traceparent()
        assert bound is not None
        assert bound.trace_id == CALLER.trace_id
        assert ctx.current_correlation_id() == "corr-1"
        assert format(span.get_span_context().span_id, "016x") == bound.span_id
    assert ctx.current_traceparent() is None
    (finished,) = exporter.get_finished_spans()
    assert finished.kind == SpanKind.CONSUMER
    assert finished.parent is not None
    assert format(finished.parent.span_id, "016x") == CALLER.span_id


def test_no_exporter_means_no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.EXPORTER_ENV, raising=False)
    assert tracing.configure_tracing("obs") is None
    assert not tracing.tracing_enabled()
    envelope = envelope_pb2.EventEnvelope(event_type="track.ready", traceparent=str(CALLER))
    with tracing.event_span(envelope) as span:
        assert span is None
        bound = ctx.current_traceparent()
        assert bound is not None
        assert bound.trace_id == CALLER.trace_id


def test_console_exporter_is_chosen_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.EXPORTER_ENV, "console")
    try:
        assert tracing.configure_tracing("obs") is not None
        assert tracing.tracing_enabled()
    finally:
        tracing.shutdown_tracing()
