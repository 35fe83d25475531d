"""Copy a source file into the downloads folder without ever exposing a partial file.

The bytes go to a uniquely named file in `<downloads>/.staging`, are fsynced and verified
(size and sha256 against what was read), and only then renamed into place: staging and
target are on the same filesystem, so the rename is atomic. The source is opened read-only
and never moved or changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

from services.domain.files import CHUNK_BYTES, fsync_dir, sha256_file

STAGING = ".staging"


class CopyError(OSError):
    """The copy could not be made or did not verify."""


def _free_name(folder: Path, name: str, checksum: str) -> tuple[Path, bool]:
    """(target path, already there): an identical file already in place is reused, a
    different one with the same name is never overwritten ("Song (1).flac")."""
    candidate = folder / name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    counter = 1
    while candidate.exists():
        if candidate.is_file() and sha256_file(candidate) == checksum:
            return candidate, True
        candidate = folder / (f"{stem} ({counter}).{ext}" if ext else f"{stem} ({counter})")
        counter += 1
    return candidate, False


def copy_into(source: Path, downloads_dir: Path, relative: str) -> tuple[Path, str]:
    """Copy `source` to `<downloads_dir>/<its parent folder>/<its name>`; returns (path,
    sha256). `relative` is the file's path inside the source folder."""
    parent = Path(relative).parent.name or "_"
    target_dir = downloads_dir / parent
    staging = downloads_dir / STAGING
    target_dir.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    temp = staging / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    expected_size = source.stat().st_size
    try:
        with source.open("rb") as src, temp.open("wb") as dst:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        checksum = digest.hexdigest()
        size = temp.stat().st_size
        if size != expected_size:
            raise CopyError(f"copy of {source.name} has {size} bytes, the source {expected_size}")
        if sha256_file(temp) != checksum:
            raise CopyError(f"copy of {source.name} does not match what was read")
        target, present = _free_name(target_dir, source.name, checksum)
        if present:
            temp.unlink()
            return target, checksum
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    # The rename is durable once the folder entry is.
    fsync_dir(target_dir)
    return target, checksum
