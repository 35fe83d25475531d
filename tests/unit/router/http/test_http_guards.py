"""The dashboard's guards over real HTTP: requests naming a foreign host are refused (421),
configured names and loopback are served, nothing but GET and HEAD is, and the page comes
with a Content-Security-Policy that allows exactly its own inline style and script and
connections back to its origin."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import TYPE_CHECKING

import aiohttp
import pytest

from router.app import RouterApp
from router.bus import BusSettings, create_bus
from router.http import create_http_app, start_http
from router.http.app import _page
from router.settings import RouterSection, RouterSettings
from services.kit.observability import metrics as m

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    bus = create_bus(BusSettings(retention_interval_s=3600.0), state_dir=tmp_path)
    await bus.start()
    app = RouterApp(RouterSettings(router=RouterSection(address="127.0.0.1:0")), bus=bus)
    await app.start()
    http = create_http_app(app.address, allowed_hosts=["mesh.home.arpa"])
    runner = await start_http(http, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{m.bound_port(runner)}"
    finally:
        await runner.cleanup()
        await app.stop(0)
        await bus.stop()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "10.0.0.5", ""])
async def test_a_foreign_host_header_is_refused(base: str, host: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/status", headers={"Host": host}) as response,
    ):
        assert response.status == 421
        assert "SOULSPOT_ROUTER__HTTP_ALLOWED_HOSTS" in await response.text()


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost:8080", "[::1]:8080", "mesh.home.arpa", "MESH.home.arpa:80"]
)
async def test_loopback_and_configured_hosts_are_served(base: str, host: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/metrics", headers={"Host": host}) as response,
    ):
        assert response.status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_only_reads_are_served(base: str, method: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base}/api/events") as response,
    ):
        assert response.status == 405


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


async def test_page_policy_allows_exactly_its_inline_code_and_own_origin(base: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/") as response:
        assert response.status == 200
        html = await response.text()
        policy = response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == _sha256(script)
    assert directives["style-src"] == _sha256(style)
    # The page polls the JSON API and listens on api/stream: its own origin, nothing more.
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    # The page loads nothing from elsewhere: no src= or href= that the policy would have to allow.
    assert not re.search(r"\s(src|href)=", _page().decode())


async def test_live_stream_carries_the_policy_too(base: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/stream") as response,
    ):
        assert response.status == 200
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
