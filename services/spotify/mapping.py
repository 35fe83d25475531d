"""How Spotify's answers map onto the contracts: a track as a TrackReference, a failure as the
MeshError a caller (and the router's fallback) should see."""

from __future__ import annotations

from services.kit.rpc.errors import (
    FailedPrecondition,
    MeshError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.spotify.settings import NO_CREDENTIALS
from services.spotify.spotify_api import (
    PlaylistNotAccessible,
    SpotifyAuthError,
    SpotifyError,
    SpotifyLoginNeeded,
    SpotifyNotConfigured,
    SpotifyRateLimited,
    SpotifyTrack,
    SpotifyUnreachable,
)
from soulspot.common.v1 import references_pb2

__all__ = ["mesh_error", "track_reference"]


def track_reference(track: SpotifyTrack) -> references_pb2.TrackReference:
    return references_pb2.TrackReference(
        spotify_id=track["spotify_id"],
        isrc=(track["isrc"] or "").upper(),
        title=track["title"],
        artist=track["artists"],
        album=track["album"],
        duration_ms=track["duration_ms"],
        track_number=track["track_number"] or 0,
        disc_number=track["disc_number"] or 0,
        year=track["year"] or 0,
    )


def mesh_error(err: SpotifyError) -> MeshError:
    """The status a caller (and the router's fallback) should see for a Spotify failure.

    Anything that means "Spotify cannot answer now" is UNAVAILABLE or RESOURCE_EXHAUSTED, so
    the router falls back to the local catalog; an inaccessible playlist is NOT_FOUND.
    """
    if isinstance(err, PlaylistNotAccessible):
        return NotFound(str(err))
    if isinstance(err, SpotifyLoginNeeded):
        # No other module can read this user's Spotify: the user has to log in first.
        return FailedPrecondition(str(err))
    if isinstance(err, SpotifyNotConfigured):
        return Unavailable(NO_CREDENTIALS)
    if isinstance(err, SpotifyRateLimited):
        return ResourceExhausted(str(err))
    if isinstance(err, SpotifyAuthError | SpotifyUnreachable):
        return Unavailable(str(err))
    return Unavailable(f"Spotify failed: {err}")
