"""Turning what a user pastes (share URL, URI, bare id, "liked") into a Spotify playlist id.

Shared by the spotify module (which reads the playlist) and the router's playlist watches
(which key a watch by the id, so a share URL and the bare id are one watch).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["LIKED", "canonical_playlist", "is_liked_songs", "parse_playlist_id"]

# What names the user's liked songs: "liked", or the URI Spotify's apps copy for them.
LIKED = "liked"
_LIKED_URI = re.compile(r"spotify:user:[^:]+:collection")

_ID = re.compile(r"[A-Za-z0-9]+")
# spotify:playlist:ID and the older spotify:user:NAME:playlist:ID
_URI = re.compile(r"spotify:(?:user:[^:]+:)?playlist:([A-Za-z0-9]+)")
_HOSTS = frozenset({"open.spotify.com", "play.spotify.com", "spotify.link"})


def is_liked_songs(text: str) -> bool:
    value = text.strip()
    return value.lower() in (LIKED, "liked-songs") or bool(_LIKED_URI.fullmatch(value))


def parse_playlist_id(text: str) -> str | None:
    """The playlist id in `text`, or None when it is no playlist reference."""
    value = text.strip()
    if _ID.fullmatch(value):
        return value
    if match := _URI.fullmatch(value):
        return match.group(1)
    parts = urlsplit(value if "://" in value else f"https://{value}")
    if parts.hostname not in _HOSTS:
        return None
    segments = [s for s in parts.path.split("/") if s]
    # /playlist/ID, /intl-de/playlist/ID, /user/NAME/playlist/ID, /embed/playlist/ID
    for index, segment in enumerate(segments[:-1]):
        if segment == "playlist" and _ID.fullmatch(segments[index + 1]):
            return segments[index + 1]
    return None


def canonical_playlist(text: str) -> str:
    """One spelling per playlist: `liked` for the liked songs, the bare id for any Spotify
    playlist reference, and anything else as given (stripped), for another playlist source
    to read."""
    value = text.strip()
    if is_liked_songs(value):
        return LIKED
    return parse_playlist_id(value) or value
