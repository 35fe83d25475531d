"""slskd transfer states, and finding a downloaded file on disk.

slskd reports a transfer's state as the comma-joined names of Soulseek.NET's ``TransferStates``
flags ("Completed, Succeeded", "Queued, Remotely", "InProgress"). This module turns that string
into flags with the questions a caller asks (terminal? succeeded? failed?), and answers the
complaint users of similar tools raise most: a transfer reported as failed although the file
did arrive. :func:`resolve_outcome` checks the disk before believing a failure.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DownloadOutcome",
    "TransferFlags",
    "TransferState",
    "locate_download",
    "parse_state",
    "remote_parts",
    "resolve_outcome",
]


class TransferFlags(enum.Flag):
    """Mirror of Soulseek.NET's ``TransferStates`` flags, by name."""

    NONE = 0
    REQUESTED = enum.auto()
    QUEUED = enum.auto()
    INITIALIZING = enum.auto()
    IN_PROGRESS = enum.auto()
    COMPLETED = enum.auto()
    SUCCEEDED = enum.auto()
    CANCELLED = enum.auto()
    TIMED_OUT = enum.auto()
    ERRORED = enum.auto()
    REJECTED = enum.auto()
    ABORTED = enum.auto()
    LOCALLY = enum.auto()
    REMOTELY = enum.auto()


_BY_NAME = {
    "none": TransferFlags.NONE,
    "requested": TransferFlags.REQUESTED,
    "queued": TransferFlags.QUEUED,
    "initializing": TransferFlags.INITIALIZING,
    "inprogress": TransferFlags.IN_PROGRESS,
    "completed": TransferFlags.COMPLETED,
    "succeeded": TransferFlags.SUCCEEDED,
    "cancelled": TransferFlags.CANCELLED,
    "timedout": TransferFlags.TIMED_OUT,
    "errored": TransferFlags.ERRORED,
    "rejected": TransferFlags.REJECTED,
    "aborted": TransferFlags.ABORTED,
    "locally": TransferFlags.LOCALLY,
    "remotely": TransferFlags.REMOTELY,
}

_FAILURE = (
    TransferFlags.ERRORED
    | TransferFlags.CANCELLED
    | TransferFlags.TIMED_OUT
    | TransferFlags.REJECTED
    | TransferFlags.ABORTED
)


@dataclass(frozen=True)
class TransferState:
    """A parsed slskd transfer state string."""

    raw: str
    flags: TransferFlags
    unknown: tuple[str, ...] = ()

    @property
    def is_terminal(self) -> bool:
        # Failure flags only ever appear together with Completed, but a state string from a
        # newer slskd could in principle carry one alone: treat it as terminal too.
        return bool(self.flags & (TransferFlags.COMPLETED | _FAILURE))

    @property
    def succeeded(self) -> bool:
        return TransferFlags.SUCCEEDED in self.flags and not self.failed

    @property
    def failed(self) -> bool:
        return bool(self.flags & _FAILURE)

    @property
    def queued(self) -> bool:
        return not self.is_terminal and bool(
            self.flags & (TransferFlags.QUEUED | TransferFlags.REQUESTED)
        )

    @property
    def queued_remotely(self) -> bool:
        return self.queued and TransferFlags.REMOTELY in self.flags

    @property
    def in_progress(self) -> bool:
        return not self.is_terminal and bool(
            self.flags & (TransferFlags.IN_PROGRESS | TransferFlags.INITIALIZING)
        )

    @property
    def failure_reason(self) -> str | None:
        """The failure flag names ("Errored", "TimedOut", ...), or None when not failed."""
        if not self.failed:
            return None
        names = {
            TransferFlags.ERRORED: "Errored",
            TransferFlags.CANCELLED: "Cancelled",
            TransferFlags.TIMED_OUT: "TimedOut",
            TransferFlags.REJECTED: "Rejected",
            TransferFlags.ABORTED: "Aborted",
        }
        return ", ".join(name for flag, name in names.items() if flag in self.flags)


def parse_state(raw: str | None) -> TransferState:
    """Parse "Completed, Succeeded" and friends; unknown words are kept, not fatal."""
    text = raw or ""
    flags = TransferFlags.NONE
    unknown: list[str] = []
    for word in re.split(r"[,|\s]+", text):
        if not word:
            continue
        flag = _BY_NAME.get(word.lower())
        if flag is None:
            unknown.append(word)
        else:
            flags |= flag
    return TransferState(raw=text, flags=flags, unknown=tuple(unknown))


def remote_parts(remote_filename: str) -> tuple[str | None, str]:
    """(last remote folder, file name) of a Soulseek path, Windows- or posix-style.

    ``@@user\\Music\\Artist\\Album\\01 - Song.flac`` gives ``("Album", "01 - Song.flac")``.
    """
    parts = [p for p in re.split(r"[\\/]+", remote_filename) if p]
    if not parts:
        return None, ""
    return (parts[-2] if len(parts) >= 2 else None), parts[-1]


def _size_ok(path: Path, expected_size: int | None) -> bool:
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if expected_size is None or expected_size <= 0:
        return size > 0
    return size == expected_size


def _dedup_variants(folder: Path, name: str) -> list[Path]:
    """Files slskd wrote under a de-duplicated name ("Song_639012345678901234.flac")."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    pattern = re.compile(re.escape(stem) + r"_\d+" + (re.escape("." + ext) if ext else "") + "$")
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and pattern.match(p.name))
    except OSError:
        return []


def locate_download(
    downloads_dir: str | Path,
    remote_filename: str,
    expected_size: int | None = None,
    *,
    max_depth: int = 4,
) -> Path | None:
    """Find where slskd put a downloaded file, or None.

    slskd writes ``<downloads>/<last remote folder>/<file name>``. Users move the downloads
    root around and slskd versions differ, so this also looks one level deeper, directly in
    the root, at de-duplicated names, and finally for the file name anywhere (bounded depth).
    When ``expected_size`` is given only a file of exactly that size counts: a partial file is
    not an arrival.
    """
    root = Path(downloads_dir)
    folder, name = remote_parts(remote_filename)
    if not name or not root.is_dir():
        return None
    folders: list[Path] = []
    if folder:
        folders.append(root / folder)
        folders.extend(sorted(p / folder for p in root.iterdir() if p.is_dir()))
    folders.append(root)
    for candidate_dir in folders:
        exact = candidate_dir / name
        if exact.is_file() and _size_ok(exact, expected_size):
            return exact
        for variant in _dedup_variants(candidate_dir, name):
            if _size_ok(variant, expected_size):
                return variant
    # Last resort: the name anywhere below the root, shallowest first.
    matches = sorted(
        (p for p in root.rglob(name) if p.is_file()),
        key=lambda p: (len(p.relative_to(root).parts), str(p)),
    )
    for match in matches:
        if len(match.relative_to(root).parts) <= max_depth + 1 and _size_ok(match, expected_size):
            return match
    return None


@dataclass(frozen=True)
class DownloadOutcome:
    """What really happened to a transfer, disk evidence included."""

    arrived: bool
    path: Path | None
    state: TransferState
    reason: str

    @property
    def terminal(self) -> bool:
        return self.arrived or self.state.is_terminal


def resolve_outcome(
    state: TransferState | str,
    downloads_dir: str | Path,
    remote_filename: str,
    expected_size: int | None,
) -> DownloadOutcome:
    """Combine slskd's reported state with what is on disk.

    A complete file of the expected size counts as arrived whatever the state says: slskd can
    report Errored (or the peer a late cancel) after the last byte was written, and reporting
    that as a failure is the "false failed" users complain about.
    """
    parsed = parse_state(state) if isinstance(state, str) else state
    path = locate_download(downloads_dir, remote_filename, expected_size)
    if parsed.succeeded:
        if path is not None:
            return DownloadOutcome(True, path, parsed, "completed")
        return DownloadOutcome(
            False, None, parsed, "slskd reports success but the file was not found on disk"
        )
    if path is not None and (parsed.is_terminal or expected_size):
        note = f"slskd reports {parsed.raw!r} but the complete file is on disk"
        return DownloadOutcome(True, path, parsed, note if parsed.failed else "file on disk")
    if parsed.failed:
        return DownloadOutcome(False, None, parsed, f"transfer {parsed.failure_reason}")
    return DownloadOutcome(False, None, parsed, f"not finished: {parsed.raw or 'unknown'}")
