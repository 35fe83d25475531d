"""MusicBrainz lookups (by ISRC, then by title and artist), polite and never fatal.

MusicBrainz asks for at most one request per second per client and a meaningful User-Agent,
and answers 503 when a client goes faster. Enrichment is optional in the pipeline, so a lookup
that cannot reach MusicBrainz returns a "skipped" result with the reason instead of raising.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from services.kit.support.backoff import Backoff, BackoffPolicy, pause
from services.kit.support.http_client import PooledHttpClient

__all__ = [
    "DEFAULT_USER_AGENT",
    "LookupResult",
    "MusicBrainzClient",
    "Recording",
    "build_recording_query",
    "lucene_quote",
]

DEFAULT_BASE_URL = "https://musicbrainz.org"
DEFAULT_USER_AGENT = "SoulSpotMesh/0.1 ( contact )"

LookupStatus = Literal["found", "not_found", "skipped"]


@dataclass(frozen=True)
class Recording:
    mbid: str
    title: str
    artist: str
    album: str | None
    year: int | None
    track_number: int | None
    release_mbid: str | None = None
    score: int | None = None


@dataclass(frozen=True)
class LookupResult:
    status: LookupStatus
    reason: str
    recording: Recording | None = None
    matched_by: Literal["isrc", "search"] | None = None


class _Unavailable(Exception):
    """Internal: MusicBrainz cannot answer now (network, 503 past retries, 5xx)."""


def lucene_quote(value: str) -> str:
    """A Lucene phrase: inside quotes only the quote and backslash need escaping."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_recording_query(title: str, artist: str | None) -> str:
    query = f"recording:{lucene_quote(title)}"
    if artist:
        query += f" AND artist:{lucene_quote(artist)}"
    return query


def _year(date: Any) -> int | None:
    text = str(date or "")
    return int(text[:4]) if text[:4].isdigit() else None


def _recording_from_api(data: dict[str, Any]) -> Recording:
    credits = data.get("artist-credit") or []
    artist = "".join(
        str(c.get("name") or (c.get("artist") or {}).get("name", "")) + str(c.get("joinphrase", ""))
        for c in credits
        if isinstance(c, dict)
    )
    releases = [r for r in data.get("releases") or [] if isinstance(r, dict)]
    # The first release listed stands for the album; MusicBrainz gives no "canonical" one.
    release = releases[0] if releases else {}
    track_number: int | None = None
    for medium in release.get("media") or []:
        for track in medium.get("track") or medium.get("tracks") or []:
            number = str(track.get("number") or track.get("position") or "")
            if number.isdigit():
                track_number = int(number)
                break
        if track_number is None and isinstance(medium.get("track-offset"), int):
            track_number = int(medium["track-offset"]) + 1
        if track_number is not None:
            break
    return Recording(
        mbid=str(data.get("id") or ""),
        title=str(data.get("title") or ""),
        artist=artist,
        album=str(release["title"]) if release.get("title") else None,
        year=_year(release.get("date") or data.get("first-release-date")),
        track_number=track_number,
        release_mbid=str(release["id"]) if release.get("id") else None,
        score=data.get("score") if isinstance(data.get("score"), int) else None,
    )


class MusicBrainzClient(PooledHttpClient):
    """Throttled MusicBrainz client shared by all lookups of a process."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout: float = 10.0,
        min_interval_s: float = 1.0,
        max_retries: int = 3,
        backoff_base_s: float = 1.0,
        min_score: int = 80,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=f"{self.base_url}/ws/2",
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            timeout=timeout,
        )
        self._min_interval_s = min_interval_s
        self._max_retries = max_retries
        # No jitter: requests already go one at a time through the throttle, and the
        # service's own Retry-After wins when it asks for longer.
        self._backoff = BackoffPolicy(
            initial_s=backoff_base_s, cap_s=max(backoff_base_s, 30.0), jitter="none"
        )
        self._min_score = min_score
        self._throttle = asyncio.Lock()
        self._last_request_end = float("-inf")

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        """One throttled GET; None for 404. Retries 503 with backoff."""
        backoff = Backoff(self._backoff)
        for attempt in range(self._max_retries + 1):
            # The lock is held across the request and the interval is counted from the end of
            # the previous one, so the service sees at least ``min_interval_s`` between
            # requests however many coroutines share the client.
            async with self._throttle:
                wait = self._last_request_end + self._min_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    response = await self._http.get(path, params={**params, "fmt": "json"})
                except httpx.TransportError as exc:
                    raise _Unavailable(
                        f"MusicBrainz unreachable at {self.base_url}: {exc}"
                    ) from exc
                finally:
                    self._last_request_end = time.monotonic()
            if response.status_code == 503:
                if attempt == self._max_retries:
                    break
                retry_after = response.headers.get("Retry-After", "")
                delay = backoff.next_delay()
                if retry_after.isdigit():
                    delay = max(delay, float(retry_after))
                await pause(delay)
                continue
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                raise _Unavailable(
                    f"MusicBrainz answered {response.status_code} to {path}: {response.text[:200]}"
                )
            data = response.json()
            return data if isinstance(data, dict) else {}
        raise _Unavailable(
            f"MusicBrainz kept answering 503 (rate limited) after {self._max_retries} retries"
        )

    async def by_isrc(self, isrc: str) -> Recording | None:
        data = await self._get(f"/isrc/{isrc}", {"inc": "artist-credits+releases+media"})
        recordings = (data or {}).get("recordings") or []
        return _recording_from_api(recordings[0]) if recordings else None

    async def search_recording(self, title: str, artist: str | None) -> Recording | None:
        query = build_recording_query(title, artist)
        data = await self._get("/recording", {"query": query, "limit": "5"})
        for item in (data or {}).get("recordings") or []:
            score = item.get("score")
            if isinstance(score, int) and score < self._min_score:
                continue
            return _recording_from_api(item)
        return None

    async def lookup(
        self, *, isrc: str | None = None, title: str | None = None, artist: str | None = None
    ) -> LookupResult:
        """ISRC first (exact), then a title/artist search. Never raises for network trouble."""
        if not isrc and not title:
            return LookupResult("not_found", "nothing to look up: no ISRC and no title")
        try:
            if isrc:
                recording = await self.by_isrc(isrc)
                if recording is not None:
                    return LookupResult("found", f"matched ISRC {isrc}", recording, "isrc")
            if title:
                recording = await self.search_recording(title, artist)
                if recording is not None:
                    return LookupResult("found", "matched by title and artist", recording, "search")
        except _Unavailable as exc:
            return LookupResult("skipped", str(exc))
        return LookupResult("not_found", "no MusicBrainz recording matched")
