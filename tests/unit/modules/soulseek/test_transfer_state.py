from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.soulseek.transfer_state import (
    TransferFlags,
    locate_download,
    parse_state,
    remote_parts,
    resolve_outcome,
)

if TYPE_CHECKING:
    from pathlib import Path

REMOTE = "@@alice\\Music\\Some Artist\\Some Album\\01 - Song.flac"


@pytest.mark.parametrize(
    ("raw", "terminal", "succeeded", "failed", "queued", "in_progress"),
    [
        ("Completed, Succeeded", True, True, False, False, False),
        ("Completed, Errored", True, False, True, False, False),
        ("Completed, Cancelled", True, False, True, False, False),
        ("Completed, TimedOut", True, False, True, False, False),
        ("Completed, Rejected", True, False, True, False, False),
        ("Completed, Aborted", True, False, True, False, False),
        ("Queued, Remotely", False, False, False, True, False),
        ("Queued, Locally", False, False, False, True, False),
        ("Requested", False, False, False, True, False),
        ("Initializing", False, False, False, False, True),
        ("InProgress", False, False, False, False, True),
    ],
)
def test_parse_state_flags(
    raw: str, terminal: bool, succeeded: bool, failed: bool, queued: bool, in_progress: bool
) -> None:
    state = parse_state(raw)
    assert state.is_terminal is terminal
    assert state.succeeded is succeeded
    assert state.failed is failed
    assert state.queued is queued
    assert state.in_progress is in_progress


def test_parse_state_details() -> None:
    state = parse_state("Queued, Remotely")
    assert state.flags == TransferFlags.QUEUED | TransferFlags.REMOTELY
    assert state.queued_remotely
    assert parse_state("Completed, TimedOut").failure_reason == "TimedOut"
    assert parse_state("Completed, Succeeded").failure_reason is None
    odd = parse_state("Completed, Succeeded, Sparkly")
    assert odd.succeeded
    assert odd.unknown == ("Sparkly",)
    assert not parse_state("").is_terminal
    assert not parse_state(None).is_terminal


def test_remote_parts_windows_and_posix() -> None:
    assert remote_parts(REMOTE) == ("Some Album", "01 - Song.flac")
    assert remote_parts("music/Artist/Album/02 x.mp3") == ("Album", "02 x.mp3")
    assert remote_parts("lonely.flac") == (None, "lonely.flac")


def _put(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_locate_in_remote_folder(tmp_path: Path) -> None:
    expected = _put(tmp_path / "Some Album" / "01 - Song.flac", 100)
    assert locate_download(tmp_path, REMOTE, 100) == expected


def test_locate_one_level_deeper(tmp_path: Path) -> None:
    expected = _put(tmp_path / "alice" / "Some Album" / "01 - Song.flac", 100)
    assert locate_download(tmp_path, REMOTE, 100) == expected


def test_locate_dedup_suffix(tmp_path: Path) -> None:
    expected = _put(tmp_path / "Some Album" / "01 - Song_639000000000000001.flac", 100)
    assert locate_download(tmp_path, REMOTE, 100) == expected


def test_locate_fallback_by_filename(tmp_path: Path) -> None:
    expected = _put(tmp_path / "elsewhere" / "nested" / "01 - Song.flac", 100)
    assert locate_download(tmp_path, REMOTE, 100) == expected


def test_locate_rejects_partial_file(tmp_path: Path) -> None:
    _put(tmp_path / "Some Album" / "01 - Song.flac", 50)
    assert locate_download(tmp_path, REMOTE, 100) is None
    assert locate_download(tmp_path / "missing", REMOTE, 100) is None


def test_errored_but_complete_file_counts_as_arrived(tmp_path: Path) -> None:
    _put(tmp_path / "Some Album" / "01 - Song.flac", 100)
    outcome = resolve_outcome("Completed, Errored", tmp_path, REMOTE, 100)
    assert outcome.arrived
    assert "complete file is on disk" in outcome.reason


def test_errored_without_file_is_failure(tmp_path: Path) -> None:
    outcome = resolve_outcome("Completed, Errored", tmp_path, REMOTE, 100)
    assert not outcome.arrived
    assert outcome.terminal
    assert outcome.reason == "transfer Errored"


def test_success_without_file_is_reported(tmp_path: Path) -> None:
    outcome = resolve_outcome("Completed, Succeeded", tmp_path, REMOTE, 100)
    assert not outcome.arrived
    assert "not found on disk" in outcome.reason


def test_in_progress_is_not_terminal(tmp_path: Path) -> None:
    outcome = resolve_outcome("InProgress", tmp_path, REMOTE, 100)
    assert not outcome.arrived
    assert not outcome.terminal
