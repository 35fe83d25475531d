"""Stand-in for the Spotify Web API and accounts service, speaking the documented subset.

Not Spotify: a local test server serving

* ``POST /api/token`` (client credentials, HTTP Basic; 400 ``invalid_client`` otherwise),
* ``GET /v1/search?type=track`` with ``limit``/``offset`` paging and absolute ``next`` URLs,
* ``GET /v1/playlists/{id}/tracks`` paging (null tracks and local files included, as Spotify
  returns them), 404 for unknown or inaccessible (editorial) playlists,
* 401 for expired or revoked bearer tokens and 429 with ``Retry-After`` on demand.

Both the accounts and API paths are served from the same base URL.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

from tests.standins import LoggedRequest, Reply, StandinServer, json_reply

__all__ = ["SpotifyStandin", "make_track"]


def make_track(
    track_id: str,
    name: str,
    artists: list[str],
    album: str,
    *,
    duration_ms: int = 200_000,
    isrc: str | None = None,
    release_date: str = "2020-01-01",
    track_number: int = 1,
    disc_number: int = 1,
) -> dict[str, Any]:
    """A Spotify track object with the fields the adapter reads."""
    return {
        "id": track_id,
        "type": "track",
        "name": name,
        "artists": [{"name": a, "id": f"artist-{a}", "type": "artist"} for a in artists],
        "album": {"name": album, "release_date": release_date, "release_date_precision": "day"},
        "duration_ms": duration_ms,
        "external_ids": {"isrc": isrc} if isrc else {},
        "track_number": track_number,
        "disc_number": disc_number,
        "is_local": False,
    }


class SpotifyStandin(StandinServer):
    def __init__(
        self,
        *,
        client_id: str = "standin-id",
        client_secret: str = "standin-secret",
        tracks: list[dict[str, Any]] | None = None,
        playlists: dict[str, list[dict[str, Any]]] | None = None,
        inaccessible_playlists: set[str] | None = None,
        token_lifetime_s: int = 3600,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.tracks = tracks or []
        # Playlist items: {"track": {...} | None, "is_local": bool}
        self.playlists = playlists or {}
        self.inaccessible_playlists = inaccessible_playlists or set()
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.rate_limited_served = 0
        self._pending_429: list[int] = []
        self._lock = threading.Lock()

    # -- knobs ---------------------------------------------------------------------------------

    def rate_limit_next(self, count: int, retry_after_s: int = 1) -> None:
        """The next ``count`` API requests get 429 with ``Retry-After: retry_after_s``."""
        with self._lock:
            self._pending_429.extend([retry_after_s] * count)

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    # -- protocol ------------------------------------------------------------------------------

    def handle(self, request: LoggedRequest) -> Reply:
        if request.path == "/api/token" and request.method == "POST":
            return self._token(request)
        if not request.path.startswith("/v1/"):
            return Reply(404)
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        with self._lock:
            expires = self.tokens.get(token)
            if not auth.startswith("Bearer ") or expires is None or expires < time.monotonic():
                return json_reply(
                    401, {"error": {"status": 401, "message": "The access token expired"}}
                )
            if self._pending_429:
                retry_after = self._pending_429.pop(0)
                self.rate_limited_served += 1
                return json_reply(
                    429,
                    {"error": {"status": 429, "message": "API rate limit exceeded"}},
                    {"Retry-After": str(retry_after)},
                )
        if request.path == "/v1/search" and request.method == "GET":
            return self._search(request)
        if match := re.fullmatch(r"/v1/playlists/([^/]+)/tracks", request.path):
            return self._playlist(match.group(1), request)
        return json_reply(404, {"error": {"status": 404, "message": "Service not found"}})

    def _token(self, request: LoggedRequest) -> Reply:
        form = parse_qs(request.body.decode())
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if (
            form.get("grant_type") != ["client_credentials"]
            or request.headers.get("authorization") != f"Basic {expected}"
        ):
            return json_reply(
                400, {"error": "invalid_client", "error_description": "Invalid client"}
            )
        token = secrets.token_urlsafe(16)
        with self._lock:
            self.tokens[token] = time.monotonic() + self.token_lifetime_s
            self.tokens_issued += 1
        return json_reply(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s},
        )

    def _paging(
        self, request: LoggedRequest, items: list[Any], href: str, max_limit: int
    ) -> dict[str, Any]:
        limit = min(int(request.query.get("limit", ["20"])[0]), max_limit)
        offset = int(request.query.get("offset", ["0"])[0])
        page = items[offset : offset + limit]
        base = {k: v[0] for k, v in request.query.items() if k not in ("limit", "offset")}

        def link(at: int) -> str:
            return f"{self.base_url}{href}?{urlencode({**base, 'offset': at, 'limit': limit})}"

        return {
            "href": link(offset),
            "items": page,
            "limit": limit,
            "offset": offset,
            "total": len(items),
            "next": link(offset + limit) if offset + limit < len(items) else None,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
        }

    def _search(self, request: LoggedRequest) -> Reply:
        if request.query.get("type") != ["track"]:
            return json_reply(400, {"error": {"status": 400, "message": "type must be track"}})
        query = request.query.get("q", [""])[0].lower()
        words = re.findall(r"[a-z0-9]+", re.sub(r"\b(track|artist|album|isrc):", " ", query))

        def matches(track: dict[str, Any]) -> bool:
            hay = " ".join(
                [track["name"], track["album"]["name"], *(a["name"] for a in track["artists"])]
            ).lower()
            return all(w in re.findall(r"[a-z0-9]+", hay) for w in words)

        hits = [t for t in self.tracks if matches(t)]
        return json_reply(200, {"tracks": self._paging(request, hits, "/v1/search", 50)})

    def _playlist(self, playlist_id: str, request: LoggedRequest) -> Reply:
        if playlist_id in self.inaccessible_playlists or playlist_id not in self.playlists:
            return json_reply(404, {"error": {"status": 404, "message": "Resource not found"}})
        items = self.playlists[playlist_id]
        href = f"/v1/playlists/{playlist_id}/tracks"
        return json_reply(200, self._paging(request, items, href, 100))
