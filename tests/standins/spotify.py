"""Stand-in for the Spotify Web API and accounts service, speaking the documented subset.

Not Spotify: a local test server serving

* ``POST /api/token`` (client credentials, HTTP Basic; 400 ``invalid_client`` otherwise;
  ``authorization_code`` with PKCE verification; ``refresh_token``, rotating the refresh token
  on every use; 400 ``invalid_grant`` for a refresh token it no longer knows),
* ``GET /authorize`` (authorization code flow with PKCE, S256 only): a redirect back to the
  ``redirect_uri`` with ``code`` and ``state`` while :attr:`SpotifyStandin.consent` is true (the
  test plays the user who consents), with ``error=access_denied`` otherwise,
* ``GET /v1/me/tracks`` (liked songs, paged, a user's token only; 401 for an app's token),
* private playlists (:attr:`SpotifyStandin.private_playlists`): 404 for an app's token, as
  Spotify answers, and readable with a user's token,
* ``GET /v1/search?type=album`` and ``GET /v1/albums/{id}/tracks``: albums made of the
  catalogue's tracks (by album name and first artist), tracks in disc and track order,
* ``GET /v1/search?type=track`` with ``limit``/``offset`` paging and absolute ``next`` URLs,
* ``GET /v1/playlists/{id}?fields=...`` (dotted ``fields`` paths such as ``name,tracks.total``),
* ``GET /v1/playlists/{id}/tracks`` paging (null tracks and local files included, as Spotify
  returns them), 404 for unknown or inaccessible (editorial) playlists,
* 401 for expired or revoked bearer tokens and 429 with ``Retry-After`` on demand,
* a held answer for one playlist page on demand (:meth:`SpotifyStandin.hold_playlist_page`), so
  a test can observe what a client does before that page arrives.

Both the accounts and API paths are served from the same base URL.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.standins import LoggedRequest, Reply, StandinServer, json_reply

__all__ = ["PageHold", "SpotifyStandin", "make_track"]

# Long enough for any test, short enough that a forgotten release fails instead of hanging.
HOLD_TIMEOUT_S = 10.0


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


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class PageHold:
    """One withheld playlist page: answered only after :meth:`release`."""

    def __init__(self) -> None:
        self._released = threading.Event()
        self.requested = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait(self) -> None:
        self.requested.set()
        self._released.wait(HOLD_TIMEOUT_S)


class SpotifyStandin(StandinServer):
    def __init__(
        self,
        *,
        client_id: str = "standin-id",
        client_secret: str = "standin-secret",
        tracks: list[dict[str, Any]] | None = None,
        playlists: dict[str, list[dict[str, Any]]] | None = None,
        playlist_names: dict[str, str] | None = None,
        inaccessible_playlists: set[str] | None = None,
        token_lifetime_s: int = 3600,
        liked: list[dict[str, Any]] | None = None,
        private_playlists: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.tracks = tracks or []
        # Playlist items: {"track": {...} | None, "is_local": bool}
        self.playlists = playlists or {}
        self.playlist_names = playlist_names or {}
        self.inaccessible_playlists = inaccessible_playlists or set()
        self.token_lifetime_s = token_lifetime_s
        # Liked songs, newest first (as Spotify lists them).
        self.liked = liked or []
        self.private_playlists = private_playlists or set()
        # Whether /authorize sends the browser back with a code (the user consents).
        self.consent = True
        self.tokens: dict[str, float] = {}
        # Access tokens issued to a user (the others are the app's client-credentials tokens).
        self.user_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.refreshes = 0
        # code -> (code_challenge, redirect_uri, client_id)
        self._codes: dict[str, tuple[str, str, str]] = {}
        self.tokens_issued = 0
        self.rate_limited_served = 0
        self._pending_429: list[int] = []
        self._holds: dict[tuple[str, int], PageHold] = {}
        self._lock = threading.Lock()

    # -- knobs ---------------------------------------------------------------------------------

    def rate_limit_next(self, count: int, retry_after_s: int = 1) -> None:
        """The next ``count`` API requests get 429 with ``Retry-After: retry_after_s``."""
        with self._lock:
            self._pending_429.extend([retry_after_s] * count)

    def hold_playlist_page(self, playlist_id: str, offset: int) -> PageHold:
        """Withhold the answer for the tracks page at ``offset`` until the hold is released."""
        hold = PageHold()
        with self._lock:
            self._holds[(playlist_id, offset)] = hold
        return hold

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def revoke_refresh_tokens(self) -> None:
        """Forget every refresh token and user access token, as when the user removes the
        app's access."""
        with self._lock:
            self.refresh_tokens.clear()
            for token in self.user_tokens:
                self.tokens.pop(token, None)
            self.user_tokens.clear()

    # -- protocol ------------------------------------------------------------------------------

    def handle(self, request: LoggedRequest) -> Reply:
        if request.path == "/api/token" and request.method == "POST":
            return self._token(request)
        if request.path == "/authorize" and request.method == "GET":
            return self._authorize(request)
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
            as_user = token in self.user_tokens
        if request.path == "/v1/me/tracks" and request.method == "GET":
            if not as_user:
                return json_reply(401, {"error": {"status": 401, "message": "Missing user"}})
            return json_reply(200, self._paging(request, self.liked, "/v1/me/tracks", 50))
        if request.path.startswith("/v1/playlists/") and not as_user:
            playlist_id = request.path.split("/")[3]
            if playlist_id in self.private_playlists:
                return json_reply(404, {"error": {"status": 404, "message": "Not found"}})
        if request.path == "/v1/search" and request.method == "GET":
            if request.query.get("type") == ["album"]:
                return self._search_albums(request)
            return self._search(request)
        if match := re.fullmatch(r"/v1/albums/([^/]+)/tracks", request.path):
            return self._album_tracks(match.group(1), request)
        if match := re.fullmatch(r"/v1/playlists/([^/]+)/tracks", request.path):
            return self._playlist(match.group(1), request)
        if match := re.fullmatch(r"/v1/playlists/([^/]+)", request.path):
            return self._playlist_object(match.group(1), request)
        return json_reply(404, {"error": {"status": 404, "message": "Service not found"}})

    def _authorize(self, request: LoggedRequest) -> Reply:
        query = {k: v[0] for k, v in request.query.items()}
        redirect_uri = query.get("redirect_uri", "")
        problems = [
            name
            for name, ok in (
                ("client_id", query.get("client_id") == self.client_id),
                ("response_type", query.get("response_type") == "code"),
                ("code_challenge_method", query.get("code_challenge_method") == "S256"),
                ("code_challenge", len(query.get("code_challenge", "")) == 43),
                ("redirect_uri", urlsplit(redirect_uri).scheme == "http"),
            )
            if not ok
        ]
        if problems:
            return Reply(400, f"invalid request: {', '.join(problems)}".encode())
        state = {"state": query["state"]} if "state" in query else {}
        if not self.consent:
            location = f"{redirect_uri}?{urlencode({'error': 'access_denied', **state})}"
            return Reply(302, b"", {"Location": location})
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = (query["code_challenge"], redirect_uri, self.client_id)
        return Reply(302, b"", {"Location": f"{redirect_uri}?{urlencode({'code': code, **state})}"})

    def _user_tokens(self, *, scope: str = "user-library-read") -> Reply:
        access = secrets.token_urlsafe(16)
        refresh = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[access] = time.monotonic() + self.token_lifetime_s
            self.user_tokens.add(access)
            self.refresh_tokens.add(refresh)
            self.tokens_issued += 1
        return json_reply(
            200,
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_s,
                "refresh_token": refresh,
                "scope": scope,
            },
        )

    def _grant(self, form: dict[str, list[str]]) -> Reply:
        """The user grants: authorization_code (PKCE) and refresh_token."""
        value = {k: v[0] for k, v in form.items()}
        invalid = json_reply(400, {"error": "invalid_grant", "error_description": "Invalid grant"})
        if value.get("client_id") != self.client_id:
            return json_reply(
                400, {"error": "invalid_client", "error_description": "Invalid client"}
            )
        if value["grant_type"] == "refresh_token":
            with self._lock:
                known = value.get("refresh_token") in self.refresh_tokens
                if known:
                    # Rotation: the used refresh token is retired, a new one comes back.
                    self.refresh_tokens.discard(value["refresh_token"])
                    self.refreshes += 1
            return self._user_tokens() if known else invalid
        with self._lock:
            issued = self._codes.pop(value.get("code", ""), None)
        if issued is None:
            return invalid
        challenge, redirect_uri, _client = issued
        verifier = value.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if computed != challenge or value.get("redirect_uri") != redirect_uri:
            return invalid
        return self._user_tokens()

    def _token(self, request: LoggedRequest) -> Reply:
        form = parse_qs(request.body.decode())
        if form.get("grant_type") in (["authorization_code"], ["refresh_token"]):
            return self._grant(form)
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

    def _albums(self) -> dict[str, dict[str, Any]]:
        """The albums the catalogue's tracks belong to, by id (from the album's name and first
        artist), each with its tracks in album order."""
        albums: dict[str, dict[str, Any]] = {}
        for track in self.tracks:
            artist = track["artists"][0]["name"] if track["artists"] else ""
            album_id = "album-" + "-".join(_words(f"{artist} {track['album']['name']}"))
            entry = albums.setdefault(
                album_id,
                {
                    "id": album_id,
                    "type": "album",
                    "name": track["album"]["name"],
                    "artists": track["artists"][:1],
                    "release_date": track["album"].get("release_date", ""),
                    "tracks": [],
                },
            )
            entry["tracks"].append({k: v for k, v in track.items() if k != "album"})
        for entry in albums.values():
            entry["tracks"].sort(key=lambda t: (t["disc_number"], t["track_number"]))
            entry["total_tracks"] = len(entry["tracks"])
        return albums

    def _search_albums(self, request: LoggedRequest) -> Reply:
        query = request.query.get("q", [""])[0].lower()
        words = _words(re.sub(r"\b(album|artist):", " ", query))
        hits = [
            {k: v for k, v in album.items() if k != "tracks"}
            for album in self._albums().values()
            if all(
                w in _words(" ".join([album["name"], *(a["name"] for a in album["artists"])]))
                for w in words
            )
        ]
        return json_reply(200, {"albums": self._paging(request, hits, "/v1/search", 50)})

    def _album_tracks(self, album_id: str, request: LoggedRequest) -> Reply:
        album = self._albums().get(album_id)
        if album is None:
            return json_reply(404, {"error": {"status": 404, "message": "Non existing id"}})
        href = f"/v1/albums/{album_id}/tracks"
        return json_reply(200, self._paging(request, album["tracks"], href, 50))

    def _missing(self, playlist_id: str) -> bool:
        return playlist_id in self.inaccessible_playlists or playlist_id not in self.playlists

    def _playlist_object(self, playlist_id: str, request: LoggedRequest) -> Reply:
        if self._missing(playlist_id):
            return json_reply(404, {"error": {"status": 404, "message": "Resource not found"}})
        full: dict[str, Any] = {
            "id": playlist_id,
            "type": "playlist",
            "name": self.playlist_names.get(playlist_id, f"Playlist {playlist_id}"),
            "public": True,
            "tracks": self._paging(
                request, self.playlists[playlist_id], f"/v1/playlists/{playlist_id}/tracks", 100
            ),
        }
        fields = request.query.get("fields", [""])[0]
        if not fields:
            return json_reply(200, full)
        if "(" in fields or "!" in fields:
            # Spotify accepts these; the stand-in only knows dotted paths and says so.
            return json_reply(400, {"error": {"status": 400, "message": "unsupported fields"}})
        chosen: dict[str, Any] = {}
        for path in fields.split(","):
            source: dict[str, Any] = full
            target = chosen
            *parents, leaf = path.strip().split(".")
            for key in parents:
                source = source.get(key) or {}
                target = target.setdefault(key, {})
            if leaf in source:
                target[leaf] = source[leaf]
        return json_reply(200, chosen)

    def _playlist(self, playlist_id: str, request: LoggedRequest) -> Reply:
        if self._missing(playlist_id):
            return json_reply(404, {"error": {"status": 404, "message": "Resource not found"}})
        offset = int(request.query.get("offset", ["0"])[0])
        with self._lock:
            hold = self._holds.pop((playlist_id, offset), None)
        if hold is not None:
            hold.wait()
        items = self.playlists[playlist_id]
        href = f"/v1/playlists/{playlist_id}/tracks"
        return json_reply(200, self._paging(request, items, href, 100))
