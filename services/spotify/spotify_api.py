"""Async client for the Spotify Web API with the client-credentials flow, and the user's own
login for liked songs and private playlists.

Client credentials give catalogue access (search, public playlists) without a user; once
`soulspot login spotify` stored a refresh token (services/spotify/user_token.py), playlists
and liked songs are read as that user. Two
behaviours surprise people and are made explicit here: Spotify-owned editorial and
algorithmic playlists answer 404 to client-credentials apps (:class:`PlaylistNotAccessible`),
and 429 answers carry ``Retry-After`` that must be honoured.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, TypedDict

import httpx

from services.kit.support.http_client import PooledHttpClient
from services.spotify.user_token import UserAuth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

__all__ = [
    "LIKED_SONGS_NAME",
    "PlaylistNotAccessible",
    "SpotifyAlbum",
    "SpotifyAuthError",
    "SpotifyClient",
    "SpotifyError",
    "SpotifyLikedPage",
    "SpotifyLoginNeeded",
    "SpotifyNotConfigured",
    "SpotifyPlaylist",
    "SpotifyRateLimited",
    "SpotifyTrack",
    "SpotifyUnreachable",
    "track_from_api",
]

DEFAULT_API_BASE = "https://api.spotify.com"
DEFAULT_ACCOUNTS_BASE = "https://accounts.spotify.com"
# Refresh this long before the token expires, so a request never leaves with a token that
# dies in flight.
TOKEN_REFRESH_MARGIN_S = 60.0
SEARCH_PAGE_MAX = 50
PLAYLIST_PAGE_MAX = 100
LIKED_PAGE_MAX = 50
LIKED_SONGS_NAME = "Liked Songs"


class SpotifyError(Exception):
    """Any failure talking to Spotify."""


class SpotifyNotConfigured(SpotifyError):
    """No client id / secret: the module cannot serve Spotify capabilities."""


class SpotifyAuthError(SpotifyError):
    """Spotify rejected the client credentials or the token."""


class SpotifyLoginNeeded(SpotifyError):
    """The call needs the user's login, and there is none Spotify accepts."""


class SpotifyUnreachable(SpotifyError):
    """Spotify could not be reached."""


class SpotifyRateLimited(SpotifyError):
    """Spotify asked us to wait longer than we are willing to (Retry-After)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"Spotify rate limit: retry after {retry_after_s:g}s")
        self.retry_after_s = retry_after_s


class PlaylistNotAccessible(SpotifyError):
    """The playlist is unknown or not readable with client credentials."""

    def __init__(self, playlist_id: str) -> None:
        super().__init__(
            f"playlist {playlist_id} is not accessible: Spotify answers 404 for private "
            "playlists and for Spotify-owned editorial or algorithmic playlists (Discover "
            "Weekly, Daily Mix, most 'Spotify' playlists), which are not available to "
            "client-credentials apps"
        )
        self.playlist_id = playlist_id


class SpotifyTrack(TypedDict):
    spotify_id: str
    title: str
    artists: str
    album: str
    duration_ms: int
    isrc: str | None
    track_number: int | None
    disc_number: int | None
    year: int | None


class SpotifyAlbum(TypedDict):
    album_id: str
    name: str
    artists: str
    release_date: str


class SpotifyPlaylist(TypedDict):
    name: str
    # Spotify's count of the playlist's items, including the removed tracks, local files and
    # episodes that playlist_tracks skips.
    total: int


class SpotifyLikedPage(TypedDict):
    # Spotify's count of the user's liked songs, local files included.
    total: int
    tracks: list[SpotifyTrack]


def track_from_api(data: dict[str, Any]) -> SpotifyTrack:
    """Flatten a Spotify track object into the fields the mesh uses."""
    album = data.get("album") or {}
    release = str(album.get("release_date") or "")
    year = int(release[:4]) if release[:4].isdigit() else None
    isrc = (data.get("external_ids") or {}).get("isrc")
    return SpotifyTrack(
        spotify_id=str(data.get("id") or ""),
        title=str(data.get("name") or ""),
        artists=", ".join(str(a.get("name", "")) for a in data.get("artists") or []),
        album=str(album.get("name") or ""),
        duration_ms=int(data.get("duration_ms") or 0),
        isrc=str(isrc) if isrc else None,
        track_number=data.get("track_number"),
        disc_number=data.get("disc_number"),
        year=year,
    )


class SpotifyClient(PooledHttpClient):
    """Spotify Web API client. Use as ``async with SpotifyClient(id, secret) as client``."""

    def __init__(
        self,
        client_id: str | None,
        client_secret: str | None,
        *,
        api_base: str = DEFAULT_API_BASE,
        accounts_base: str = DEFAULT_ACCOUNTS_BASE,
        timeout: float = 10.0,
        max_retry_after_s: float = 30.0,
        max_rate_limit_retries: int = 3,
        market: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        self._client_id = client_id or ""
        self._client_secret = client_secret or ""
        self.api_base = api_base.rstrip("/")
        self.accounts_base = accounts_base.rstrip("/")
        self._http = httpx.AsyncClient(timeout=timeout)
        self._max_retry_after_s = max_retry_after_s
        self._max_rate_limit_retries = max_rate_limit_retries
        self._market = market
        self._token: str | None = None
        self._token_expires_at = 0.0
        # Several coroutines may find the token stale at once; one refresh is enough.
        self._token_lock = asyncio.Lock()
        self.user: UserAuth | None = None
        if token_file is not None:
            self.user = UserAuth(
                self._http,
                accounts_base=self.accounts_base,
                client_id=self._client_id,
                token_file=token_file,
                login_needed=SpotifyLoginNeeded,
                unreachable=SpotifyUnreachable,
                failed=SpotifyError,
            )

    @property
    def configured(self) -> bool:
        return bool(self._client_id and self._client_secret)

    # -- token ---------------------------------------------------------------------------------

    async def _fetch_token(self) -> None:
        try:
            response = await self._http.post(
                f"{self.accounts_base}/api/token",
                data={"grant_type": "client_credentials"},
                auth=(self._client_id, self._client_secret),
            )
        except httpx.TransportError as exc:
            raise SpotifyUnreachable(f"Spotify accounts service unreachable: {exc}") from exc
        if response.status_code in (400, 401):
            raise SpotifyAuthError(
                f"Spotify rejected the client credentials ({response.status_code}): "
                f"{response.text[:200]}"
            )
        if response.status_code >= 400:
            raise SpotifyError(f"token request failed ({response.status_code})")
        data = response.json()
        self._token = str(data["access_token"])
        self._token_expires_at = time.monotonic() + float(data.get("expires_in", 3600))

    async def _access_token(self, *, rejected: str | None = None) -> str:
        """A valid token; ``rejected`` is one the API just refused and must be replaced."""
        if not self.configured:
            raise SpotifyNotConfigured(
                "Spotify client id and secret are not configured "
                "(set SOULSPOT_SPOTIFY__CLIENT_ID and SOULSPOT_SPOTIFY__CLIENT_SECRET)"
            )
        async with self._token_lock:
            stale = time.monotonic() >= self._token_expires_at - TOKEN_REFRESH_MARGIN_S
            # Coroutines that were refused the same token queue here; only the first one
            # fetches, the others find the token already replaced.
            replace = rejected is not None and rejected == self._token
            if replace or self._token is None or stale:
                await self._fetch_token()
            assert self._token is not None
            return self._token

    # -- requests ------------------------------------------------------------------------------

    def _as_user(self) -> bool:
        """Whether playlists are read as the logged-in user (who may see private ones)."""
        return self.user is not None and self.user.logged_in

    async def _token_for(self, user: bool, rejected: str | None = None) -> str:
        if not user:
            return await self._access_token(rejected=rejected)
        if self.user is None:
            raise SpotifyLoginNeeded("this module has no Spotify login file configured")
        return await self.user.access_token(rejected=rejected)

    async def _get(
        self, url: str, params: dict[str, Any] | None = None, *, user: bool = False
    ) -> dict[str, Any]:
        """GET with the bearer token (the user's when `user`); refresh once on 401, honour
        Retry-After on 429."""
        token = await self._token_for(user)
        refreshed = False
        rate_limited = 0
        while True:
            try:
                response = await self._http.get(
                    url, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TransportError as exc:
                raise SpotifyUnreachable(f"Spotify API unreachable: {exc}") from exc
            if response.status_code == 401 and not refreshed:
                # Revoked or expired early: one fresh token, then give up.
                token = await self._token_for(user, rejected=token)
                refreshed = True
                continue
            if response.status_code == 429:
                retry_after = _retry_after(response)
                rate_limited += 1
                if (
                    retry_after > self._max_retry_after_s
                    or rate_limited > self._max_rate_limit_retries
                ):
                    raise SpotifyRateLimited(retry_after)
                await asyncio.sleep(retry_after)
                continue
            if response.status_code == 401:
                raise SpotifyAuthError("Spotify rejected a freshly issued token (401)")
            if response.status_code >= 400:
                raise _HTTPStatus(response.status_code, response.text)
            data = response.json()
            return data if isinstance(data, dict) else {}

    # -- API -----------------------------------------------------------------------------------

    async def search_tracks(self, query: str, limit: int = 20) -> list[SpotifyTrack]:
        """Up to ``limit`` tracks for ``query``, following ``next`` across pages."""
        if limit <= 0:
            return []
        params: dict[str, Any] | None = {
            "q": query,
            "type": "track",
            "limit": min(limit, SEARCH_PAGE_MAX),
            "offset": 0,
        }
        if self._market and params is not None:
            params["market"] = self._market
        url: str | None = f"{self.api_base}/v1/search"
        found: list[SpotifyTrack] = []
        while url and len(found) < limit:
            try:
                page = (await self._get(url, params)).get("tracks") or {}
            except _HTTPStatus as exc:
                raise SpotifyError(f"Spotify search failed: {exc}") from exc
            items = page.get("items") or []
            found.extend(track_from_api(t) for t in items if t)
            # ``next`` is a complete URL carrying the query, offset and limit.
            url, params = page.get("next"), None
            if not items:
                break
        return found[:limit]

    async def find_album(
        self, artist: str, album: str
    ) -> tuple[SpotifyAlbum, list[SpotifyTrack]] | None:
        """The album best matching `artist` and `album` (Spotify's first search hit) and its
        tracks in album order; None when the search finds no album."""
        params: dict[str, Any] = {
            "q": f"album:{album} artist:{artist}",
            "type": "album",
            "limit": 1,
        }
        if self._market:
            params["market"] = self._market
        try:
            page = (await self._get(f"{self.api_base}/v1/search", params)).get("albums") or {}
        except _HTTPStatus as exc:
            raise SpotifyError(f"Spotify album search failed: {exc}") from exc
        items = [a for a in page.get("items") or [] if a and a.get("id")]
        if not items:
            return None
        found = items[0]
        release = str(found.get("release_date") or "")
        summary = SpotifyAlbum(
            album_id=str(found["id"]),
            name=str(found.get("name") or ""),
            artists=", ".join(str(a.get("name", "")) for a in found.get("artists") or []),
            release_date=release,
        )
        tracks: list[SpotifyTrack] = []
        url: str | None = f"{self.api_base}/v1/albums/{summary['album_id']}/tracks"
        track_params: dict[str, Any] | None = {"limit": SEARCH_PAGE_MAX, "offset": 0}
        while url:
            try:
                listing = await self._get(url, track_params)
            except _HTTPStatus as exc:
                raise SpotifyError(f"Spotify album {summary['album_id']} failed: {exc}") from exc
            for item in listing.get("items") or []:
                if item and item.get("id"):
                    # Album tracks are "simplified": they name no album; it is this one.
                    tracks.append(
                        track_from_api(
                            {**item, "album": {"name": summary["name"], "release_date": release}}
                        )
                    )
            url, track_params = listing.get("next"), None
        tracks.sort(key=lambda t: (t["disc_number"] or 1, t["track_number"] or 0))
        return summary, tracks

    async def playlist(self, playlist_id: str) -> SpotifyPlaylist:
        """The playlist's name and item count, from one small request."""
        # ``fields`` trims the answer to what is used: without it Spotify also sends the
        # first 100 items, which playlist_tracks fetches anyway.
        url = f"{self.api_base}/v1/playlists/{playlist_id}"
        try:
            data = await self._get(url, {"fields": "name,tracks.total"}, user=self._as_user())
        except _HTTPStatus as exc:
            if exc.status == 404:
                raise PlaylistNotAccessible(playlist_id) from exc
            raise SpotifyError(f"Spotify playlist {playlist_id} failed: {exc}") from exc
        return SpotifyPlaylist(
            name=str(data.get("name") or ""),
            total=int((data.get("tracks") or {}).get("total") or 0),
        )

    async def playlist_tracks(self, playlist_id: str) -> AsyncIterator[SpotifyTrack]:
        """Every track of a playlist, page by page; local files and removed tracks skipped."""
        params: dict[str, Any] | None = {"limit": PLAYLIST_PAGE_MAX, "offset": 0}
        if self._market and params is not None:
            params["market"] = self._market
        url: str | None = f"{self.api_base}/v1/playlists/{playlist_id}/tracks"
        user = self._as_user()
        while url:
            try:
                page = await self._get(url, params, user=user)
            except _HTTPStatus as exc:
                if exc.status == 404:
                    raise PlaylistNotAccessible(playlist_id) from exc
                raise SpotifyError(f"Spotify playlist {playlist_id} failed: {exc}") from exc
            for item in page.get("items") or []:
                track = (item or {}).get("track")
                # Null tracks (removed from the catalogue), local files and podcast episodes
                # have nothing to download.
                if not track or item.get("is_local") or track.get("is_local"):
                    continue
                if track.get("type", "track") != "track" or not track.get("id"):
                    continue
                yield track_from_api(track)
            url, params = page.get("next"), None

    async def liked_pages(self) -> AsyncIterator[SpotifyLikedPage]:
        """The user's liked songs, newest first as Spotify lists them, one page at a time,
        each with Spotify's count of them (so the first page gives the total)."""
        params: dict[str, Any] | None = {"limit": LIKED_PAGE_MAX, "offset": 0}
        if self._market and params is not None:
            params["market"] = self._market
        url: str | None = f"{self.api_base}/v1/me/tracks"
        while url:
            try:
                page = await self._get(url, params, user=True)
            except _HTTPStatus as exc:
                raise SpotifyError(f"Spotify liked songs failed: {exc}") from exc
            tracks = [
                track_from_api(track)
                for track in ((item or {}).get("track") for item in page.get("items") or [])
                if track and not track.get("is_local") and track.get("id")
            ]
            yield SpotifyLikedPage(total=int(page.get("total") or 0), tracks=tracks)
            url, params = page.get("next"), None

    async def health(self) -> tuple[bool, str]:
        """(usable, reason): configured and able to obtain a token."""
        try:
            await self._access_token()
        except SpotifyError as exc:
            return False, str(exc)
        return True, "Spotify token obtained"


class _HTTPStatus(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0
