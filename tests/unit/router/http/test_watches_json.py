"""Watched playlists in the dashboard's status JSON and on its page."""

from __future__ import annotations

from importlib import resources

from google.protobuf import duration_pb2

from router.http.convert import status_json
from soulspot.router.v1 import router_pb2, watches_pb2


def test_status_json_lists_watches_with_their_interval_as_people_write_it() -> None:
    status = router_pb2.GetStatusResponse(
        watched_playlists=[
            watches_pb2.PlaylistWatch(
                playlist_id="pl1",
                name="Mix",
                every=duration_pb2.Duration(seconds=6 * 3600),
                last_result="2 new tracks requested",
                tracks_known=12,
            )
        ]
    )
    [watch] = status_json(status)["watched_playlists"]
    assert watch["playlist_id"] == "pl1"
    assert watch["every_text"] == "6h"
    assert watch["last_result"] == "2 new tracks requested"
    assert watch["tracks_known"] == 12


def test_the_page_has_a_watched_playlists_panel_filled_from_the_status() -> None:
    page = resources.files("router.http").joinpath("dashboard.html").read_text()
    assert 'id="watches"' in page
    assert "status.watched_playlists" in page
