"""`soulspot get "Artist - Title"` reads the artist and title from the query when no catalog
knows the track."""

from __future__ import annotations

import pytest

from cli.flows import track_from_query


def test_artist_and_title_are_read_from_the_query() -> None:
    track = track_from_query("The Paper Lanterns - Harbour Lights")
    assert track is not None
    assert (track.artist, track.title) == ("The Paper Lanterns", "Harbour Lights")


def test_only_the_first_separator_splits() -> None:
    track = track_from_query("  Artist -  Song - Live at Home ")
    assert track is not None
    assert (track.artist, track.title) == ("Artist", "Song - Live at Home")


@pytest.mark.parametrize("query", ["Harbour Lights", "Artist -", " - Title", "Artist-Title"])
def test_other_queries_name_no_track(query: str) -> None:
    assert track_from_query(query) is None
