"""SpotifyClient.find_album against the Spotify stand-in: an album's track list, in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.spotify.spotify_api import SpotifyClient
from tests.standins.spotify import SpotifyStandin, make_track

if TYPE_CHECKING:
    from collections.abc import Iterator

# 60 tracks, stored out of order: the listing takes two pages and comes back in album order.
TRACKS = [
    make_track(
        f"id{i:03d}",
        f"Glass Tide {i}",
        ["Mira Okonkwo"],
        "Copper Sky",
        release_date="2021-05-07",
        track_number=i,
        duration_ms=180_000 + i,
    )
    for i in range(60, 0, -1)
] + [make_track("other", "Elsewhere", ["Someone Else"], "Other Album")]


@pytest.fixture
def standin() -> Iterator[SpotifyStandin]:
    server = SpotifyStandin(tracks=TRACKS)
    server.start()
    yield server
    server.stop()


def _client(standin: SpotifyStandin) -> SpotifyClient:
    return SpotifyClient(
        standin.client_id,
        standin.client_secret,
        api_base=standin.base_url,
        accounts_base=standin.base_url,
    )


async def test_find_album_lists_every_track_in_album_order(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        found = await client.find_album("Mira Okonkwo", "Copper Sky")
    assert found is not None
    album, tracks = found
    assert album["name"] == "Copper Sky"
    assert album["artists"] == "Mira Okonkwo"
    assert [t["track_number"] for t in tracks] == list(range(1, 61))
    assert tracks[0]["title"] == "Glass Tide 1"
    assert tracks[0]["duration_ms"] == 180_001
    assert {t["album"] for t in tracks} == {"Copper Sky"}
    assert {t["year"] for t in tracks} == {2021}
    search = standin.requests_to("/v1/search")[0]
    assert search.query["type"] == ["album"]
    assert len(standin.requests_to(f"/v1/albums/{album['album_id']}/tracks")) == 2


async def test_find_album_answers_none_for_an_unknown_album(standin: SpotifyStandin) -> None:
    async with _client(standin) as client:
        assert await client.find_album("Mira Okonkwo", "No Such Record") is None
