"""Spotify failures as mesh statuses, and Spotify tracks as TrackReferences."""

from __future__ import annotations

import grpc
import pytest

from services.spotify.mapping import mesh_error, track_reference
from services.spotify.settings import SpotifySettings
from services.spotify.spotify_api import (
    PlaylistNotAccessible,
    SpotifyAuthError,
    SpotifyError,
    SpotifyNotConfigured,
    SpotifyRateLimited,
    SpotifyUnreachable,
    track_from_api,
)
from tests.helpers.spotify_credentials import credential_variables, names_in_full
from tests.standins.spotify import make_track


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PlaylistNotAccessible("p1"), grpc.StatusCode.NOT_FOUND),
        (SpotifyNotConfigured("x"), grpc.StatusCode.UNAVAILABLE),
        (SpotifyRateLimited(40), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (SpotifyAuthError("bad"), grpc.StatusCode.UNAVAILABLE),
        (SpotifyUnreachable("down"), grpc.StatusCode.UNAVAILABLE),
        (SpotifyError("odd"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_status_codes(error: SpotifyError, code: grpc.StatusCode) -> None:
    assert mesh_error(error).code == code


def test_messages_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without credentials the message names both variables in full, and setting exactly
    # those is what configures the module.
    variables = credential_variables()
    message = mesh_error(SpotifyNotConfigured("x")).message
    assert names_in_full(message, variables) == list(variables)
    monkeypatch.setenv(variables[0], "id-from-env")
    monkeypatch.setenv(variables[1], "secret-from-env")
    section = SpotifySettings().spotify
    assert (section.client_id, section.client_secret) == ("id-from-env", "secret-from-env")
    assert "client-credentials" in mesh_error(PlaylistNotAccessible("p1")).message


def test_track_reference() -> None:
    data = make_track(
        "sp1",
        "Glass Tide",
        ["Mira Okonkwo", "Guest"],
        "Copper Sky",
        isrc="qzss12100014",
        release_date="2021-06-01",
        track_number=4,
        disc_number=1,
        duration_ms=123_000,
    )
    ref = track_reference(track_from_api(data))
    assert (ref.spotify_id, ref.title, ref.artist) == ("sp1", "Glass Tide", "Mira Okonkwo, Guest")
    assert (ref.isrc, ref.year, ref.track_number, ref.duration_ms) == (
        "QZSS12100014",
        2021,
        4,
        123_000,
    )
