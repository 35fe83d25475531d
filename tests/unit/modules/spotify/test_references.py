"""Playlist ids from what users paste."""

from __future__ import annotations

import pytest

from services.spotify.references import parse_playlist_id

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
