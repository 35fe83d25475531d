"""SpotifyClient against the Spotify stand-in."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from services.spotify import spotify_api
from services.spotify.spotify_api import (
    PlaylistNotAccessible,
    SpotifyAuthError,
    SpotifyClient,
    SpotifyNotConfigured,
    SpotifyRateLimited,
    SpotifyTrack,
)
from tests.standins.spotify import SpotifyStandin, make_track

if TYPE_CHECKING:
    from collections.abc import Iterator

TRACKS = [
    make_track(
        f"id{i:03d}",
        f"Glass Tide {i}",
        ["Mira Okonkwo", "Guest"] if i == 0 else ["Mira Okonkwo"],
        "Copper Sky",
        isrc=f"QZSS1210{i:04d}",
        release_date="2021-05-07",
        track_number=i + 1,
        duration_ms=180_000 + i,
    )
    for i in range(120)
]


def _playlist() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"track": t, "is_local": False} for t in TRACKS]
    items.insert(5, {"track": None, "is_local": False})  # removed from the catalogue
    local = make_track("", "Home Demo", ["Me"], "", release_date="")
    items.insert(50, {"track": {**local, "id": None, "is_local": True}, "is_local": True})
    items.insert(70, {"track": {**TRACKS[0], "type": "episode"}, "is_local": False})
    return items


@pytest.fixture
def standin() -> Iterator[SpotifyStandin]:
    server = SpotifyStandin(
        tracks=TRACKS,
        playlists={"pl-big": _playlist()},
        playlist_names={"pl-big": "Glass Tide, all of it"},
        inaccessible_playlists={"37i9dQZF1DXcBWIGoYBM5M"},
    )
    server.start()
    yield server
    server.stop()


def _client(standin: SpotifyStandin, **kwargs: Any) -> SpotifyClient:
    return SpotifyClient(
        standin.client_id,
        standin.client_secret,
        api_base=standin.base_url,
        accounts_base=standin.base_url,
        **kwargs,
    )


async def test_search_follows_next_up_to_limit(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        tracks = await client.search_tracks("glass tide", limit=75)
    assert len(tracks) == 75
    pages = standin.requests_to("/v1/search")
    assert len(pages) == 2  # 50 + 25 via the "next" URL
    assert pages[1].query["offset"] == ["50"]
    first: SpotifyTrack = tracks[0]
    assert first == {
        "spotify_id": "id000",
        "title": "Glass Tide 0",
        "artists": "Mira Okonkwo, Guest",
        "album": "Copper Sky",
        "duration_ms": 180_000,
        "isrc": "QZSS12100000",
        "track_number": 1,
        "disc_number": 1,
        "year": 2021,
    }


async def test_search_small_limit_single_page(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        assert len(await client.search_tracks("glass", limit=3)) == 3
        assert await client.search_tracks("no such words", limit=10) == []
    assert len(standin.requests_to("/v1/search")) == 2


async def test_token_is_cached(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        for _ in range(3):
            await client.search_tracks("glass", limit=1)
    assert standin.tokens_issued == 1


async def test_token_refreshed_before_expiry(
    standin: SpotifyStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin.token_lifetime_s = 3
    # With a 2 s refresh margin a 3 s token is renewed once it has 2 s left.
    monkeypatch.setattr(spotify_api, "TOKEN_REFRESH_MARGIN_S", 2.0)
    async with _client(standin) as client:
        await client.search_tracks("glass", limit=1)
        await client.search_tracks("glass", limit=1)
        assert standin.tokens_issued == 1
        await asyncio.sleep(1.1)
        await client.search_tracks("glass", limit=1)
    assert standin.tokens_issued == 2


async def test_token_refreshed_once_on_401(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        await client.search_tracks("glass", limit=1)
        standin.revoke_tokens()
        tracks = await client.search_tracks("glass", limit=1)
    assert len(tracks) == 1
    assert standin.tokens_issued == 2


async def test_bad_credentials(standin: SpotifyStandin) -> None:
    async with SpotifyClient(
        "id", "wrong", api_base=standin.base_url, accounts_base=standin.base_url
    ) as client:
        with pytest.raises(SpotifyAuthError, match="rejected the client credentials"):
            await client.search_tracks("x")
        usable, reason = await client.health()
    assert not usable
    assert "rejected" in reason


async def test_missing_credentials_not_configured(standin: SpotifyStandin) -> None:
    async with SpotifyClient(None, "", api_base=standin.base_url) as client:
        assert not client.configured
        with pytest.raises(SpotifyNotConfigured, match="not configured"):
            await client.search_tracks("x")
        with pytest.raises(SpotifyNotConfigured):
            async for _ in client.playlist_tracks("pl-big"):
                pass
    assert standin.requests == []


async def test_playlist_pages_skip_null_local_and_episodes(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        tracks = [t async for t in client.playlist_tracks("pl-big")]
    assert [t["spotify_id"] for t in tracks] == [t["id"] for t in TRACKS]
    assert len(standin.requests_to("/v1/playlists/pl-big/tracks")) == 2  # 123 items, 100/page


async def test_playlist_name_and_total_in_one_trimmed_request(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        playlist = await client.playlist("pl-big")
    # 123 items: Spotify counts the removed track, local file and episode the pages skip.
    assert playlist == {"name": "Glass Tide, all of it", "total": 123}
    [request] = standin.requests_to("/v1/playlists/pl-big")
    assert (request.path, request.query) == (
        "/v1/playlists/pl-big",
        {"fields": ["name,tracks.total"]},
    )


async def test_editorial_playlist_404(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        with pytest.raises(PlaylistNotAccessible, match="editorial or algorithmic") as info:
            async for _ in client.playlist_tracks("37i9dQZF1DXcBWIGoYBM5M"):
                pass
        with pytest.raises(PlaylistNotAccessible, match="editorial or algorithmic"):
            await client.playlist("37i9dQZF1DXcBWIGoYBM5M")
    assert "client-credentials" in str(info.value)


async def test_retry_after_is_honoured(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        await client.search_tracks("glass", limit=1)  # token first, outside the 429 window
        standin.rate_limit_next(1, retry_after_s=1)
        started = time.monotonic()
        tracks = await client.search_tracks("glass", limit=1)
        waited = time.monotonic() - started
    assert len(tracks) == 1
    assert waited >= 0.95
    searches = standin.requests_to("/v1/search")
    assert searches[-1].at - searches[-2].at >= 0.95


async def test_retry_after_beyond_bound_raises(standin: SpotifyStandin) -> None:
    async with _client(standin, max_retry_after_s=5) as client:
        await client.search_tracks("glass", limit=1)
        standin.rate_limit_next(1, retry_after_s=120)
        with pytest.raises(SpotifyRateLimited) as info:
            await client.search_tracks("glass", limit=1)
    assert info.value.retry_after_s == 120


async def test_concurrent_401s_refresh_once(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        await client.search_tracks("glass", limit=1)
        standin.revoke_tokens()
        results = await asyncio.gather(*(client.search_tracks("glass", limit=1) for _ in range(4)))
    assert all(len(r) == 1 for r in results)
    assert standin.tokens_issued == 2
