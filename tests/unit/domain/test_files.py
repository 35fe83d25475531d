"""services.domain.files: the sha256 and fsync steps the modules share."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from services.domain.files import CHUNK_BYTES, fsync_dir, fsync_file, sha256_file

if TYPE_CHECKING:
    from pathlib import Path


def test_sha256_of_a_file_longer_than_one_chunk_is_that_of_all_its_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)
    path = tmp_path / "song.flac"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_fsync_file_leaves_the_bytes_as_written(tmp_path: Path) -> None:
    path = tmp_path / "song.flac"
    path.write_bytes(b"abc")
    fsync_file(path)
    assert path.read_bytes() == b"abc"


def test_fsync_file_of_a_missing_file_raises(tmp_path: Path) -> None:
    # The caller is about to rename the file into place: a missing one must not pass.
    with pytest.raises(FileNotFoundError):
        fsync_file(tmp_path / "gone.flac")


def test_fsync_dir_is_best_effort_where_a_folder_cannot_be_synced(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    # A platform that refuses to open a folder for syncing raises OSError: it is not fatal.
    fsync_dir(tmp_path / "missing")
