"""Stand-in for the MusicBrainz web service (``/ws/2``), speaking the documented subset.

Not MusicBrainz: a local test server serving ``GET /ws/2/recording?query=...&fmt=json``
(the ``recording:"..." AND artist:"..."`` Lucene form) and ``GET /ws/2/isrc/{isrc}``. Like the
real service it refuses requests without a meaningful User-Agent (403) and can answer 503 (rate
limited) on demand. Every request's arrival time is logged so tests can measure spacing.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.standins import LoggedRequest, Reply, StandinServer, json_reply

__all__ = ["MusicBrainzStandin", "StandinRecording"]

_GENERIC_AGENTS = ("python-httpx", "python-requests", "python-urllib")


@dataclass
class StandinRecording:
    mbid: str
    title: str
    artist: str
    album: str
    date: str
    track_number: int
    isrcs: list[str] = field(default_factory=list)
    length_ms: int = 200_000

    def to_json(self, score: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.mbid,
            "title": self.title,
            "length": self.length_ms,
            "artist-credit": [
                {
                    "name": self.artist,
                    "joinphrase": "",
                    "artist": {"id": "a-1", "name": self.artist},
                }
            ],
            "first-release-date": self.date,
            "isrcs": self.isrcs,
            "releases": [
                {
                    "id": f"rel-{self.mbid}",
                    "title": self.album,
                    "date": self.date,
                    "media": [
                        {
                            "position": 1,
                            "format": "Digital Media",
                            "track-offset": self.track_number - 1,
                            "track": [
                                {
                                    "id": f"trk-{self.mbid}",
                                    "number": str(self.track_number),
                                    "title": self.title,
                                    "length": self.length_ms,
                                }
                            ],
                            "track-count": 12,
                        }
                    ],
                }
            ],
        }
        if score is not None:
            data["score"] = score
        return data


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


class MusicBrainzStandin(StandinServer):
    def __init__(self, recordings: list[StandinRecording] | None = None) -> None:
        super().__init__()
        self.recordings = recordings or []
        self._pending_503 = 0
        self.unavailable_served = 0
        self._lock = threading.Lock()

    def fail_next(self, count: int) -> None:
        """The next ``count`` requests get 503, as when a client exceeds the rate limit."""
        with self._lock:
            self._pending_503 += count

    def handle(self, request: LoggedRequest) -> Reply:
        agent = request.headers.get("user-agent", "")
        if not agent or agent.lower().startswith(_GENERIC_AGENTS):
            return json_reply(403, {"error": "A meaningful User-Agent is required."})
        with self._lock:
            if self._pending_503:
                self._pending_503 -= 1
                self.unavailable_served += 1
                return json_reply(503, {"error": "Your requests are exceeding the rate limit."})
        if request.query.get("fmt") != ["json"]:
            return Reply(406, b"<error>xml only in this stand-in</error>")
        if request.path == "/ws/2/recording":
            return self._search(request.query.get("query", [""])[0])
        if match := re.fullmatch(r"/ws/2/isrc/([A-Za-z0-9]+)", request.path):
            hits = [r for r in self.recordings if match.group(1).upper() in r.isrcs]
            if not hits:
                return json_reply(404, {"error": "Not Found"})
            return json_reply(
                200, {"isrc": match.group(1), "recordings": [r.to_json() for r in hits]}
            )
        return json_reply(404, {"error": "Not Found"})

    def _search(self, query: str) -> Reply:
        fields = {
            key: _unquote(value) for key, value in re.findall(r'(\w+):"((?:[^"\\]|\\.)*)"', query)
        }
        title = fields.get("recording", "").lower()
        artist = fields.get("artist", "").lower()
        hits = [
            r
            for r in self.recordings
            if r.title.lower() == title and (not artist or r.artist.lower() == artist)
        ]
        return json_reply(
            200,
            {
                "created": "2024-01-01T00:00:00.000Z",
                "count": len(hits),
                "offset": 0,
                "recordings": [r.to_json(score=100) for r in hits],
            },
        )
