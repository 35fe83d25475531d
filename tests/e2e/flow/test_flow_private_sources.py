"""Sources beyond public playlists: `soulspot login spotify` against the Spotify stand-in (the
test plays the browser), liked songs synced into the library with their M3U file, the M3U
updated by a re-sync, a revoked login; CSV and plain-list syncs; a bad CSV refused before
anything starts."""

from __future__ import annotations

import asyncio
import json
import stat
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers.flows import (
    folder_env,
    run_cli,
    sample_source,
    spotify_env,
    spotify_track,
    start_cli,
    start_stack,
)
from tests.helpers.mesh import free_port
from tests.standins.spotify import SpotifyStandin

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAMPLES: list[dict[str, Any]] = [
    {
        "artist": "Quiet Harbour",
        "album": "Tides",
        "title": f"Tide Song {n}",
        "track_number": n,
        "year": 2021,
        "format": "flac",
        "seconds": 0.3,
    }
    for n in range(1, 5)
]


async def _run(mesh: Mesh, *args: str, timeout_s: float = 90) -> tuple[int, str]:
    code, output = await run_cli(mesh, *args, timeout_s=timeout_s)
    # Whitespace as one space: the console wraps long lines.
    return code, " ".join(output.split())


def _m3u(mesh: Mesh, name: str) -> list[str]:
    return (mesh.library_root / "Playlists" / name).read_text(encoding="utf-8").splitlines()


def _entries(lines: list[str]) -> list[str]:
    """The #EXTINF labels, in file order."""
    return [line.split(",", 1)[1] for line in lines if line.startswith("#EXTINF:")]


async def _login(mesh: Mesh, spotify: SpotifyStandin) -> str:
    """`soulspot login spotify`, with the test following the consent address like a browser;
    the command's whole output."""
    env = {
        "SOULSPOT_SPOTIFY__CLIENT_ID": spotify.client_id,
        "SOULSPOT_SPOTIFY__ACCOUNTS_URL": spotify.base_url,
        "SOULSPOT_SPOTIFY__REDIRECT_URI": f"http://127.0.0.1:{free_port()}/callback",
        "SOULSPOT_SPOTIFY__LOGIN_TIMEOUT_S": "30",
    }
    login = await start_cli(mesh, "login", "spotify", "--no-browser", env=env, router=False)
    assert login.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not lines or not lines[-1].startswith("http"):
            line = (await login.stdout.readline()).decode()
            assert line, "".join(lines)
            lines.append(line.strip())
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        page = await browser.get(lines[-1], timeout=10)
    assert page.status_code == 200, page.text
    assert "logged in to Spotify" in page.text
    rest, _ = await asyncio.wait_for(login.communicate(), 20)
    assert login.returncode == 0, "\n".join(lines) + rest.decode()
    return "\n".join(lines) + rest.decode()


async def test_liked_songs_after_login_sync_with_an_m3u_kept_up_to_date(
    mesh: Mesh, tmp_path: Path
) -> None:
    source = sample_source(tmp_path, SAMPLES)
    tracks = [spotify_track(s, n) for n, s in enumerate(SAMPLES, 1)]
    # Spotify lists liked songs newest first.
    spotify = SpotifyStandin(tracks=tracks, liked=[{"track": tracks[1]}, {"track": tracks[0]}])
    spotify.start()
    try:
        await start_stack(
            mesh,
            {
                "spotify": spotify_env(spotify),
                "folder": folder_env(tmp_path, source),
                "library": None,
            },
        )
        # Before any login: the call fails and says what to do.
        code, output = await _run(mesh, "sync-playlist", "liked", "--timeout", "30")
        assert code == 1, output
        assert "soulspot login spotify" in output

        output = await _login(mesh, spotify)
        token_file = mesh.state_dir / "spotify" / "token.json"
        assert str(token_file) in output
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        first_refresh_token = json.loads(token_file.read_text())["refresh_token"]
        assert first_refresh_token in spotify.refresh_tokens
        assert first_refresh_token not in output

        code, output = await _run(mesh, "sync-playlist", "liked", "--timeout", "60")
        assert code == 0, output
        lines = _m3u(mesh, "Liked Songs.m3u8")
        assert lines[0] == "#EXTM3U"
        assert _entries(lines) == ["Quiet Harbour - Tide Song 2", "Quiet Harbour - Tide Song 1"]
        for path in (line for line in lines if not line.startswith("#")):
            assert (mesh.library_root / "Playlists" / path).is_file()
        # The module refreshed with the stored token and kept the rotated one.
        rotated = json.loads(token_file.read_text())["refresh_token"]
        assert rotated != first_refresh_token
        assert rotated in spotify.refresh_tokens

        # A song liked since: a re-sync puts it first in the same file.
        spotify.liked.insert(0, {"track": tracks[3]})
        code, output = await _run(mesh, "sync-playlist", "liked", "--timeout", "60")
        assert code == 0, output
        assert _entries(_m3u(mesh, "Liked Songs.m3u8")) == [
            "Quiet Harbour - Tide Song 4",
            "Quiet Harbour - Tide Song 2",
            "Quiet Harbour - Tide Song 1",
        ]
        assert not [p for p in (mesh.library_root / "Playlists").iterdir() if p.name[0] == "."]

        # The user took the app's access away: the next sync says to log in again.
        spotify.revoke_refresh_tokens()
        code, output = await _run(mesh, "sync-playlist", "liked", "--timeout", "30")
        assert code == 1, output
        assert "run `soulspot login spotify` again" in output
    finally:
        spotify.stop()


async def test_csv_and_list_files_sync_and_write_their_playlists(
    mesh: Mesh, tmp_path: Path
) -> None:
    source = sample_source(tmp_path, SAMPLES)
    await start_stack(mesh, {"folder": folder_env(tmp_path, source), "library": None})
    csv_file = tmp_path / "Road Trip.csv"
    csv_file.write_text(
        "title,ARTIST,Album,Length\n"
        "Tide Song 3,Quiet Harbour,Tides,0:00\n"
        "Tide Song 1,Quiet Harbour,Tides,0\n",
        encoding="utf-8",
    )
    code, output = await _run(mesh, "sync-playlist", "--csv", str(csv_file), "--timeout", "60")
    assert code == 0, output
    assert _entries(_m3u(mesh, "Road Trip.m3u8")) == [
        "Quiet Harbour - Tide Song 3",
        "Quiet Harbour - Tide Song 1",
    ]
    # --name names the file instead, through the library's naming rules.
    code, output = await _run(
        mesh, "sync-playlist", "--csv", str(csv_file), "--name", "Summer: mix/2026"
    )
    assert code == 0, output
    assert _entries(_m3u(mesh, "Summer_ mix_2026.m3u8")) == [
        "Quiet Harbour - Tide Song 3",
        "Quiet Harbour - Tide Song 1",
    ]

    list_file = tmp_path / "evening.txt"
    list_file.write_text(
        "# for the evening\nQuiet Harbour - Tide Song 2\n\nNobody Known - Not Anywhere\n"
        "Quiet Harbour - Tide Song 1\n",
        encoding="utf-8",
    )
    code, output = await _run(mesh, "sync-playlist", "--list", str(list_file), "--timeout", "60")
    # The track no source has fails the sync; the file lists the others and the CLI names it.
    assert code == 1, output
    assert _entries(_m3u(mesh, "evening.m3u8")) == [
        "Quiet Harbour - Tide Song 2",
        "Quiet Harbour - Tide Song 1",
    ]
    assert "not in the library yet" in output
    assert "Not Anywhere" in output


async def test_a_csv_without_a_title_column_is_refused_before_anything_starts(
    mesh: Mesh, tmp_path: Path
) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("Artist,Album,Length\nQuiet Harbour,Tides,3:10\n", encoding="utf-8")
    # No router is running: the command must stop at the file, before connecting.
    code, text = await _run(mesh, "sync-playlist", "--csv", str(csv_file), timeout_s=30)
    assert code == 1, text
    assert "no title column" in text
    assert "'Artist', 'Album', 'Length'" in text
    assert "Needed: a Title column" in text
