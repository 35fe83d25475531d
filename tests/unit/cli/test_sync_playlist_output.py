"""`sync-playlist --json`: one document with each track's outcome, and the counts; a `--name`
with no M3U file to name is refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from cli.commands.sync_playlist import _sync_document
from cli.main import app
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import playlist_pb2 as playlist_events_pb2

if TYPE_CHECKING:
    from pathlib import Path

Track = references_pb2.TrackReference


def test_every_track_has_an_outcome_and_missing_ones_are_not_handled() -> None:
    tracks = [
        (1, Track(artist="The Paper Lanterns", title="Harbour Lights", album="Night Ferry")),
        (2, Track(artist="Ostara Vale", title="Salt")),
        (3, Track(artist="Ostara Vale", title="Low Tide")),
    ]
    results = {
        1: playlist_events_pb2.PlaylistTrackHandled(
            sync_id="s1", position=1, outcome="downloaded", detail="/music/a.flac", worker="w1"
        ),
        2: playlist_events_pb2.PlaylistTrackHandled(
            sync_id="s1", position=2, outcome="failed", detail="no source has it", worker="w2"
        ),
    }
    document = _sync_document("Road trip", "s1", tracks, results)
    assert document["playlist"] == "Road trip"
    assert document["sync_id"] == "s1"
    assert document["tracks"] == [
        {
            "position": 1,
            "artist": "The Paper Lanterns",
            "title": "Harbour Lights",
            "album": "Night Ferry",
            "outcome": "downloaded",
            "detail": "/music/a.flac",
            "worker": "w1",
        },
        {
            "position": 2,
            "artist": "Ostara Vale",
            "title": "Salt",
            "album": "",
            "outcome": "failed",
            "detail": "no source has it",
            "worker": "w2",
        },
        {
            "position": 3,
            "artist": "Ostara Vale",
            "title": "Low Tide",
            "album": "",
            "outcome": "not_handled",
            "detail": "",
            "worker": "",
        },
    ]
    assert (document["failed"], document["not_handled"]) == (1, 1)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--no-m3u", "--name", "Summer"], "--name names the M3U file, which --no-m3u skips"),
        (["--name", "  "], "--name must not be blank"),
    ],
)
def test_a_name_without_a_file_to_name_is_refused_before_anything_starts(
    args: list[str], says: str, tmp_path: Path
) -> None:
    list_file = tmp_path / "evening.txt"
    list_file.write_text("Quiet Harbour - Tide Song 1\n", encoding="utf-8")
    # No router is running: the command must stop at its options, before connecting.
    result = CliRunner().invoke(app, ["sync-playlist", "--list", str(list_file), *args])
    assert result.exit_code == 2, result.output
    assert says in result.output
