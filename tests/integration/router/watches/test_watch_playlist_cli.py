"""`soulspot watch-playlist` against a real router: `--json` prints one document with the
watch's fields for add, list, run and remove; the same playlist as a share URL is the same
watch; and the `list` table fits 80 columns."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from cli.console import console
from cli.main import app
from router.app import RouterApp
from router.settings import RouterSection, RouterSettings
from router.watches import PlaylistWatches
from tests.helpers.fake_module import FakeModule

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PLAYLIST = "37i9dQZF1DXcBWIGoYBM5M"
SHARE_URL = f"https://open.spotify.com/playlist/{PLAYLIST}?si=0123456789abcdef"
WATCH_FIELDS = {
    "playlist_id",
    "name",
    "every_s",
    "running",
    "next_run_at",
    "last_run_at",
    "last_result",
    "last_run_failed",
    "tracks_in_playlist",
    "last_requested",
    "tracks_known",
    "owner",
    "created_at",
}


class _RouterThread:
    """A router with watches and a playlist module, on an event loop of its own thread: the
    command runs its own loop (asyncio.run) in the test's thread."""

    def __init__(self, state: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._state = state
        self.app: RouterApp | None = None
        self.module: FakeModule | None = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self) -> str:
        watches = PlaylistWatches(self._state, playlist_wait_s=10.0)
        section = RouterSection.model_validate(
            {"address": "127.0.0.1:0", "health_poll_interval_s": 0.1}
        )
        self.app = RouterApp(RouterSettings(router=section), watches=watches)
        await self.app.start()
        await watches.start(self.app.address)
        self.module = FakeModule("t-fake", 10, capabilities=("playlist.tracks", "download.track"))
        await self.module.start()
        await self.module.register(self.app.address)
        return self.app.address

    async def _stop(self) -> None:
        if self.module is not None:
            await self.module.stop()
        if self.app is not None:
            await self.app.stop(0)

    def start(self) -> str:
        self._thread.start()
        address: str = self._run(self._start())
        return address

    def stop(self) -> None:
        try:
            self._run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # The router runs in plaintext here, so the command does too.
    monkeypatch.setenv("SOULSPOT_TLS__PLAINTEXT", "true")
    running = _RouterThread(tmp_path / "state")
    try:
        yield running.start()
    finally:
        running.stop()


def _json(runner: CliRunner, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_watch_playlist_commands_print_one_json_document(
    router: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A narrow console: JSON is never wrapped or cut to fit it.
    monkeypatch.setattr(console, "width", 40)
    runner = CliRunner()
    at = ("--router", router)

    added = _json(runner, "watch-playlist", PLAYLIST, "--every", "6h", "--json", *at)
    assert added["created"] is True
    assert set(added["watch"]) == WATCH_FIELDS
    assert (added["watch"]["playlist_id"], added["watch"]["every_s"]) == (PLAYLIST, 21600)

    # The share URL names the same playlist: its interval changes, no second watch.
    again = _json(runner, "watch-playlist", "add", SHARE_URL, "--every", "1h", "--json", *at)
    assert again["created"] is False
    assert (again["watch"]["playlist_id"], again["watch"]["every_s"]) == (PLAYLIST, 3600)

    ran = _json(runner, "watch-playlist", "run", SHARE_URL, "--json", *at)
    assert ran["watch"]["last_run_failed"] is False
    assert ran["watch"]["tracks_in_playlist"] == 3
    assert ran["watch"]["last_run_at"].endswith("Z")

    listed = _json(runner, "watch-playlist", "list", "--json", *at)
    [watch] = listed["watches"]
    assert set(watch) == WATCH_FIELDS
    assert (watch["playlist_id"], watch["tracks_known"]) == (PLAYLIST, 3)

    removed = _json(
        runner, "watch-playlist", "remove", f"spotify:playlist:{PLAYLIST}", "--json", *at
    )
    assert removed["watch"]["playlist_id"] == PLAYLIST
    assert _json(runner, "watch-playlist", "list", "-o", "json", *at) == {"watches": []}


def test_watch_playlist_list_fits_80_columns(router: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 80)
    runner = CliRunner()
    at = ("--router", router)
    for playlist in (PLAYLIST, "x" * 120):
        added = runner.invoke(app, ["watch-playlist", playlist, "--every", "6h", *at])
        assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["watch-playlist", "list", *at])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert any(PLAYLIST[:8] in line for line in lines), listed.stdout
    assert max(len(line) for line in lines) <= 80
