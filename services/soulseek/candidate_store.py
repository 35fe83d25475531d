"""The candidates a download goes on with when a transfer fails, kept across a restart.

A download ranks its search results once; the accepted ones, best first, are its retry plan.
The plan (with which candidates were tried, which users failed, how many transfers started
and why each failed) is stored next to the download records, in the module's downloads file,
in a table of its own: a module restarted while a transfer is in flight follows it again and,
should it fail, goes on with the next candidate as if it had never stopped.

The table is created when missing, so a file written before it existed is used as it is;
the plan is one JSON document per download, so a later field needs no migration.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.kit.support.sqlite import open_wal, transaction
from services.soulseek.ranking import RankedCandidate
from services.soulseek.slskd_api import CandidateFile

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["CandidatePlan", "CandidateStore"]

log = logging.getLogger("soulspot.soulseek")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS soulseek_candidates (
    download_id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    updated_at_us INTEGER NOT NULL
);
"""


@dataclass
class CandidatePlan:
    """A download's accepted candidates, best first, and how far through them it is."""

    candidates: list[RankedCandidate]
    tried: set[int] = field(default_factory=set)
    failed_users: set[str] = field(default_factory=set)
    # Transfers started so far: the `attempt` of the next download.started is one more.
    attempt: int = 0
    # "<user>: <why>" for every transfer that failed, for the final download.failed.
    reasons: list[str] = field(default_factory=list)

    def next_index(self) -> int | None:
        """The best untried candidate, from a user that has not failed us yet when possible."""
        untried = [i for i in range(len(self.candidates)) if i not in self.tried]
        for i in untried:
            if self.candidates[i].username not in self.failed_users:
                return i
        return untried[0] if untried else None

    def to_json(self) -> str:
        return json.dumps(
            {
                "candidates": [_candidate_json(c) for c in self.candidates],
                "tried": sorted(self.tried),
                "failed_users": sorted(self.failed_users),
                "attempt": self.attempt,
                "reasons": self.reasons,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> CandidatePlan:
        data = json.loads(text)
        candidates = [_candidate(c) for c in data.get("candidates", [])]
        return cls(
            candidates=candidates,
            # An index past the list would name no candidate: dropped rather than trusted.
            tried={int(i) for i in data.get("tried", []) if 0 <= int(i) < len(candidates)},
            failed_users={str(u) for u in data.get("failed_users", [])},
            attempt=int(data.get("attempt", 0)),
            reasons=[str(r) for r in data.get("reasons", [])],
        )


def _candidate_json(candidate: RankedCandidate) -> dict[str, Any]:
    file = candidate.file
    return {
        "username": candidate.username,
        "filename": file.filename,
        "size": file.size,
        "bit_rate": file.bit_rate,
        "bit_depth": file.bit_depth,
        "sample_rate": file.sample_rate,
        "length_s": file.length_s,
        "extension": file.extension,
        "is_locked": file.is_locked,
        "score": candidate.score,
        "has_free_upload_slot": candidate.has_free_upload_slot,
        "queue_length": candidate.queue_length,
        "upload_speed": candidate.upload_speed,
        "notes": list(candidate.notes),
    }


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _candidate(data: dict[str, Any]) -> RankedCandidate:
    return RankedCandidate(
        username=str(data["username"]),
        file=CandidateFile(
            filename=str(data["filename"]),
            size=int(data["size"]),
            bit_rate=_opt_int(data.get("bit_rate")),
            bit_depth=_opt_int(data.get("bit_depth")),
            sample_rate=_opt_int(data.get("sample_rate")),
            length_s=_opt_int(data.get("length_s")),
            extension=str(data.get("extension", "")),
            is_locked=bool(data.get("is_locked", False)),
        ),
        score=float(data.get("score", 0.0)),
        has_free_upload_slot=bool(data.get("has_free_upload_slot", False)),
        queue_length=int(data.get("queue_length", 0)),
        upload_speed=int(data.get("upload_speed", 0)),
        notes=tuple(str(n) for n in data.get("notes", [])),
    )


class CandidateStore:
    """The plans of the downloads that have not ended. Used from the event loop only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Same sync level as the download records beside it: a process crash loses nothing.
        self._db = open_wal(path, synchronous="NORMAL", schema=_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, download_id: str, plan: CandidatePlan) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO soulseek_candidates (download_id, plan, updated_at_us)"
            " VALUES (?, ?, ?)",
            (download_id, plan.to_json(), time.time_ns() // 1000),
        )

    def load(self, download_id: str) -> CandidatePlan | None:
        """The stored plan; None when there is none or it cannot be read (the download is then
        followed without one: a failed transfer ends it)."""
        row = self._db.execute(
            "SELECT plan FROM soulseek_candidates WHERE download_id = ?", (download_id,)
        ).fetchone()
        if row is None:
            return None
        try:
            return CandidatePlan.from_json(str(row[0]))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.error(
                "unreadable candidate plan ignored",
                extra={"download_id": download_id, "error": str(err)},
            )
            return None

    def forget(self, download_id: str) -> None:
        self._db.execute("DELETE FROM soulseek_candidates WHERE download_id = ?", (download_id,))

    def retain(self, download_ids: Iterable[str]) -> int:
        """Drop every plan but those of `download_ids`; how many were dropped."""
        keep = set(download_ids)
        rows = self._db.execute("SELECT download_id FROM soulseek_candidates")
        stored = [str(r[0]) for r in rows]
        gone = [(d,) for d in stored if d not in keep]
        if gone:
            with transaction(self._db, immediate=False):
                self._db.executemany("DELETE FROM soulseek_candidates WHERE download_id = ?", gone)
        return len(gone)
