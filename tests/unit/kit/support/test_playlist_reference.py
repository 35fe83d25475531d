"""Playlist ids from what users paste, and one spelling per playlist."""

from __future__ import annotations

import pytest

from services.kit.support.playlist_reference import canonical_playlist, parse_playlist_id

PID = "37i9dQZF1DXcBWIGoYBM5M"


@pytest.mark.parametrize(
    "text",
    [
        PID,
        f"  {PID}\n",
        f"spotify:playlist:{PID}",
        f"spotify:user:someone:playlist:{PID}",
        f"https://open.spotify.com/playlist/{PID}",
        f"https://open.spotify.com/playlist/{PID}?si=abc123&pt=x",
        f"https://open.spotify.com/intl-de/playlist/{PID}",
        f"open.spotify.com/playlist/{PID}",
        f"https://open.spotify.com/embed/playlist/{PID}",
        f"https://open.spotify.com/user/someone/playlist/{PID}",
    ],
)
def test_accepted_forms(text: str) -> None:
    assert parse_playlist_id(text) == PID


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://example.com/playlist/abc",
        f"https://open.spotify.com/album/{PID}",
        f"spotify:album:{PID}",
        "not an id!",
        "https://open.spotify.com/playlist/",
    ],
)
def test_refused_forms(text: str) -> None:
    assert parse_playlist_id(text) is None


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (f"https://open.spotify.com/playlist/{PID}?si=abc123", PID),
        (f"spotify:playlist:{PID}", PID),
        (f" {PID} ", PID),
        ("Liked", "liked"),
        ("spotify:user:someone:collection", "liked"),
        # Not a Spotify reference: kept as given, for another playlist source to read.
        (" deezer:1234 ", "deezer:1234"),
    ],
)
def test_one_spelling_per_playlist(text: str, canonical: str) -> None:
    assert canonical_playlist(text) == canonical
