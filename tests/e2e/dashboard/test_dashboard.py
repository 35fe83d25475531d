"""The dashboard in a real browser against a real router process and a real module process.

The router serves its HTTP side on SOULSPOT_ROUTER__HTTP_ADDRESS; the page must render the
module's badge and its capability row from live data, show a download's progress pushed
over Server-Sent Events, show a playlist watched with `soulspot watch-playlist` and an album
in progress, and show the module going away after it stops.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from services.kit.events.client import RouterPublisher
from services.kit.rpc.channel import open_channel
from services.kit.security.identity import Identity
from soulspot.common.v1 import module_pb2, references_pb2
from soulspot.events.v1 import album_pb2 as album_events_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.flows import run_cli
from tests.helpers.mesh import ROOT, Mesh, free_port
from tests.helpers.pki import transport_as

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Browser

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "build" / "screenshots" / "dashboard.png"
MODULE = "notifications"
CAPABILITY = "notify.track_ready"
PLAYLIST = "37i9dQZF1DXcBWIGoYBM5M"
ALBUM_ID = "alb-e2e-1"

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent: install Debian's chromium package to run the dashboard test",
        allow_module_level=True,
    )


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _wait_http(url: str, mesh: Mesh, within_s: float = 20.0) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(within_s):
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if not mesh.procs["router"].running:
                raise RuntimeError("router exited:\n" + mesh.procs["router"].log()[-4000:])
            await asyncio.sleep(0.1)


async def _wait_module_status(mesh: Mesh, name: str, unwanted: int, within_s: float = 15.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            status = await mesh.status().GetStatus(router_pb2.GetStatusRequest(), timeout=2.0)
            module = next((m for m in status.modules if m.name == name), None)
            if module is None or module.status != unwanted:
                return
            await asyncio.sleep(0.1)


async def _watch_playlist(mesh: Mesh, playlist: str) -> None:
    """`soulspot watch-playlist PLAYLIST --every 6h` as a process, as the command line."""
    code, output = await run_cli(mesh, "watch-playlist", playlist, "--every", "6h", timeout_s=60)
    assert code == 0, output


async def _publish_album_in_progress(mesh: Mesh) -> None:
    """An album the folder module has started fetching, as its events say."""
    folder = transport_as(mesh.pki_dir, Identity.module("folder"))
    async with open_channel(mesh.router_address, transport=folder) as channel:
        publisher = RouterPublisher(channel, source_module="folder")
        await publisher.publish(
            album_events_pb2.AlbumRequested(
                album_download_id=ALBUM_ID,
                artist="The Paper Lanterns",
                album="Night Ferry",
                expected_tracks=3,
            ),
            subject=ALBUM_ID,
        )
        await publisher.publish(
            album_events_pb2.AlbumDownloadStarted(
                album_download_id=ALBUM_ID,
                source="source",
                folder="The Paper Lanterns/Night Ferry",
                track_count=3,
                attempt=1,
                artist="The Paper Lanterns",
                album="Night Ferry",
            ),
            subject=ALBUM_ID,
        )


async def test_dashboard_renders_live_data_and_follows_changes(
    tmp_path: Path, browser: Browser
) -> None:
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    async with Mesh(tmp_path) as mesh:
        mesh.start_router({"SOULSPOT_ROUTER__HTTP_ADDRESS": f"127.0.0.1:{http_port}"})
        await mesh.wait_serving("router")
        mesh.start_module(MODULE)
        await mesh.wait_routable(MODULE, CAPABILITY)
        await _wait_http(f"{base}/healthz", mesh)

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(base + "/")
        badge = page.locator(f'tr[data-module="{MODULE}"] .badge')
        await badge.wait_for(timeout=10_000)
        assert (await badge.inner_text()).strip() == "active"
        row = page.locator(f'tr[data-capability="{CAPABILITY}"]')
        assert await row.locator(f'.chip.routable[data-provider="{MODULE}"]').count() == 1
        assert (await row.locator(".badge").inner_text()).strip() == "available"
        # The router's own module.status_changed event is among the recent events.
        await page.locator('tr[data-event-type="module.status_changed"]').first.wait_for(
            timeout=10_000
        )

        # A download's progress arrives live over the stream, without a refresh.
        await page.locator("#live.on").wait_for(timeout=10_000)
        # Published as the folder module: only downloaders may publish download events.
        folder = transport_as(mesh.pki_dir, Identity.module("folder"))
        async with open_channel(mesh.router_address, transport=folder) as channel:
            publisher = RouterPublisher(channel, source_module="folder")
            await publisher.publish(
                download_events_pb2.DownloadProgress(
                    download_id="dl-e2e-1",
                    track=references_pb2.TrackReference(artist="Nina Simone", title="Sinnerman"),
                    percent=42.0,
                    state="InProgress",
                ),
                subject="dl-e2e-1",
            )
        download = page.locator('[data-download="dl-e2e-1"]')
        await download.wait_for(timeout=10_000)
        assert "Nina Simone - Sinnerman" in await download.inner_text()
        assert "42%" in await download.inner_text()

        # A playlist watched from the command line (as a share URL) and an album in progress:
        # both are on the page once it loads again.
        await _watch_playlist(mesh, f"https://open.spotify.com/playlist/{PLAYLIST}?si=e2e")
        await _publish_album_in_progress(mesh)
        await page.reload()
        watch = page.locator(f'tr[data-watch="{PLAYLIST}"]')
        await watch.wait_for(timeout=10_000)
        assert "6h" in await watch.inner_text()
        assert (await page.locator("#watches-count").inner_text()).strip() == "1"
        album = page.locator(f'tr[data-album="{ALBUM_ID}"]')
        await album.wait_for(timeout=10_000)
        album_text = await album.inner_text()
        assert "The Paper Lanterns \u2013 Night Ferry" in album_text
        assert "downloading" in album_text
        assert "The Paper Lanterns/Night Ferry" in album_text

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

        # The module stops: after the router notices, a refresh shows it gone inactive and
        # its capability unavailable.
        await mesh.stop(MODULE)
        await _wait_module_status(mesh, MODULE, module_pb2.MODULE_STATUS_ACTIVE)
        await page.evaluate("window.soulspotRefresh()")
        assert (await badge.inner_text()).strip() != "active"
        assert (await row.locator(".badge").inner_text()).strip() == "unavailable"
        assert await row.locator(f'.chip.routable[data-provider="{MODULE}"]').count() == 0
        await page.close()
