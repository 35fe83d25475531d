"""The user's Spotify login against the stand-in: PKCE code exchange, liked songs and private
playlists read as the user, refresh token rotation, and a revoked login's message."""

from __future__ import annotations

import asyncio
import stat
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest

from cli.spotify_login import LoginError, authorize_url, exchange_code, pkce_pair
from services.kit.support.playlist_reference import is_liked_songs
from services.kit.support.secret_file import read_secret_json, write_secret_json
from services.spotify.mapping import mesh_error
from services.spotify.spotify_api import PlaylistNotAccessible, SpotifyClient, SpotifyLoginNeeded
from tests.standins.spotify import SpotifyStandin, make_track

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

LIKED = [make_track(f"lk{i:03d}", f"Liked {i}", ["Mira"], "Copper Sky") for i in range(60)]
SECRET = [make_track("pv001", "Secret Song", ["Mira"], "Copper Sky")]
REDIRECT = "http://127.0.0.1:8888/callback"


@pytest.fixture
def standin() -> Iterator[SpotifyStandin]:
    server = SpotifyStandin(
        liked=[{"added_at": "2024-01-01T00:00:00Z", "track": t} for t in LIKED],
        playlists={"pvlist": [{"track": t, "is_local": False} for t in SECRET]},
        private_playlists={"pvlist"},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(standin: SpotifyStandin, tmp_path: Path) -> AsyncIterator[SpotifyClient]:
    async with SpotifyClient(
        standin.client_id,
        standin.client_secret,
        api_base=standin.base_url,
        accounts_base=standin.base_url,
        token_file=tmp_path / "state" / "spotify" / "token.json",
    ) as the_client:
        yield the_client


def _consent(standin: SpotifyStandin, verifier_for_exchange: str | None = None) -> dict[str, Any]:
    """The browser's part (follow the consent address, read the redirect) and the exchange."""
    verifier, challenge = pkce_pair()
    url = authorize_url(standin.base_url, standin.client_id, REDIRECT, challenge, "st4te")
    back = httpx.get(url, follow_redirects=False, timeout=5)
    assert back.status_code == 302
    location = back.headers["location"]
    assert location.startswith(REDIRECT)
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["state"] == "st4te"
    return exchange_code(
        standin.base_url,
        standin.client_id,
        query["code"],
        REDIRECT,
        verifier_for_exchange or verifier,
    )


async def _log_in(standin: SpotifyStandin, client: SpotifyClient) -> str:
    tokens = await asyncio.to_thread(_consent, standin)
    assert client.user is not None
    await asyncio.to_thread(
        write_secret_json,
        client.user.token_file,
        {"client_id": standin.client_id, "refresh_token": tokens["refresh_token"]},
    )
    return str(tokens["refresh_token"])


def test_the_challenge_is_the_verifiers_s256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert len(challenge) == 43
    assert "=" not in challenge
    assert pkce_pair()[0] != verifier


async def test_a_code_with_the_wrong_verifier_is_refused(standin: SpotifyStandin) -> None:
    with pytest.raises(LoginError, match="refused the login code"):
        await asyncio.to_thread(_consent, standin, "x" * 64)


async def test_liked_songs_are_read_page_by_page_as_the_user(
    standin: SpotifyStandin, client: SpotifyClient
) -> None:
    first = await _log_in(standin, client)
    pages = [page async for page in client.liked_pages()]
    assert [page["total"] for page in pages] == [60, 60]
    titles = [t["title"] for page in pages for t in page["tracks"]]
    assert titles == [f"Liked {i}" for i in range(60)]
    requests = [r for r in standin.requests if r.path == "/v1/me/tracks"]
    assert len(requests) == 2  # 50 + 10
    # One refresh; the rotated refresh token replaced the stored one.
    assert standin.refreshes == 1
    assert client.user is not None
    stored = read_secret_json(client.user.token_file)
    assert stored is not None
    assert stored["refresh_token"] != first
    assert stored["refresh_token"] in standin.refresh_tokens
    assert stat.S_IMODE(client.user.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(client.user.token_file.parent.stat().st_mode) == 0o700


async def test_a_private_playlist_needs_the_users_login(
    standin: SpotifyStandin, client: SpotifyClient
) -> None:
    with pytest.raises(PlaylistNotAccessible):
        await client.playlist("pvlist")
    await _log_in(standin, client)
    assert [t["title"] async for t in client.playlist_tracks("pvlist")] == ["Secret Song"]


async def _first_liked_page(client: SpotifyClient) -> int:
    async for page in client.liked_pages():
        return page["total"]
    raise AssertionError("no page of liked songs")


async def test_without_a_login_liked_songs_say_to_log_in(client: SpotifyClient) -> None:
    with pytest.raises(SpotifyLoginNeeded, match="run `soulspot login spotify`") as caught:
        await _first_liked_page(client)
    assert mesh_error(caught.value).code is grpc.StatusCode.FAILED_PRECONDITION


async def test_a_revoked_login_says_to_log_in_again(
    standin: SpotifyStandin, client: SpotifyClient
) -> None:
    await _log_in(standin, client)
    assert await _first_liked_page(client) == 60
    standin.revoke_refresh_tokens()
    with pytest.raises(SpotifyLoginNeeded, match="run `soulspot login spotify` again"):
        await _first_liked_page(client)


@pytest.mark.parametrize(
    ("text", "liked"),
    [
        ("liked", True),
        ("LIKED", True),
        ("spotify:user:mira:collection", True),
        ("spotify:playlist:37i9dQZF1DXcBWIGoYBM5M", False),
        ("likedsongs2024", False),
    ],
)
def test_what_names_the_liked_songs(text: str, liked: bool) -> None:
    assert is_liked_songs(text) is liked
