"""The router's HTTP side against an in-process router with its event bus: JSON endpoints,
bad query input, /metrics counting the router's RPCs, and live events over SSE."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import aiohttp
import pytest

from router.app import RouterApp
from router.bus import BusSettings, create_bus
from router.http import create_http_app, start_http
from router.settings import RouterSection, RouterSettings
from services.kit.events.client import RouterPublisher
from services.kit.observability import metrics as m
from services.kit.rpc.channel import open_channel
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[RouterApp, str, m.MeshMetrics]]:
    original = m.default_metrics()
    metrics = m.use_metrics(m.MeshMetrics())
    bus = create_bus(BusSettings(retention_interval_s=3600.0), state_dir=tmp_path)
    await bus.start()
    app = RouterApp(RouterSettings(router=RouterSection(address="127.0.0.1:0")), bus=bus)
    await app.start()
    runner = await start_http(create_http_app(app.address), "127.0.0.1", 0)
    try:
        yield app, f"http://127.0.0.1:{m.bound_port(runner)}", metrics
    finally:
        await runner.cleanup()
        await app.stop(0)
        await bus.stop()
        m.use_metrics(original)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def _progress(app: RouterApp, download_id: str, percent: float) -> None:
    async with open_channel(app.address) as channel:
        await RouterPublisher(channel, source_module="folder").publish(
            download_events_pb2.DownloadProgress(
                download_id=download_id,
                track=references_pb2.TrackReference(artist="Artist", title="Song"),
                percent=percent,
            )
        )


async def test_status_events_and_metrics(stack: tuple[RouterApp, str, m.MeshMetrics]) -> None:
    app, base, _metrics = stack
    await _progress(app, "dl-1", 10.0)
    async with aiohttp.ClientSession() as session:
        code, health = await _get(session, f"{base}/healthz")
        assert (code, health) == (200, {"status": "ok"})

        code, status = await _get(session, f"{base}/api/status")
        assert code == 200
        capabilities = status["capabilities"]
        assert isinstance(capabilities, list)
        track = next(c for c in capabilities if c["name"] == "download.track")
        assert track["available"] is False
        assert track["providers"] == []
        assert status["last_sequence"] == 1

        code, events = await _get(session, f"{base}/api/events?limit=5")
        assert code == 200
        listed = events["events"]
        assert isinstance(listed, list)
        (event,) = listed
        assert event["event_type"] == "download.progress"
        assert event["source_module"] == "folder"
        assert event["summary"] == "Artist - Song · 10%"
        assert len(event["trace_id"]) == 32

        code, letters = await _get(session, f"{base}/api/dead-letters")
        assert (code, letters) == (200, {"dead_letters": []})

        code, error = await _get(session, f"{base}/api/events?limit=many")
        assert code == 400
        assert error["field"] == "limit"

        async with session.get(f"{base}/metrics") as response:
            text = await response.text()
    # The HTTP side's own GetStatus call went through the router's gRPC server.
    assert (
        'soulspot_rpc_server_handled_total{code="OK",method="GetStatus",'
        'service="soulspot.router.v1.StatusService"}' in text
    )


async def test_stream_pushes_live_download_events(
    stack: tuple[RouterApp, str, m.MeshMetrics],
) -> None:
    app, base, _metrics = stack
    async with aiohttp.ClientSession() as session, session.get(f"{base}/api/stream") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"

        async def next_event() -> tuple[str, dict[str, object]]:
            name = ""
            while True:
                line = (await stream.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: ") and name:
                    return name, json.loads(line.removeprefix("data: "))

        async with asyncio.timeout(10):
            name, hello = await next_event()
            assert name == "hello"
            assert hello["connected"] is True
            await _progress(app, "dl-2", 55.0)
            name, data = await next_event()
    assert name == "download.progress"
    payload = data["payload"]
    assert isinstance(payload, dict)
    assert payload["download_id"] == "dl-2"
    assert payload["percent"] == 55.0
