"""Durable file steps every module shares: a file's sha256, and fsync of a file and a folder.

A new or renamed file survives a power cut only once its bytes and then its folder entry are
synced; the importer, the tag writer and the folder copier all follow that order.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

# A folder's sync is the kit's (its own file writers need it too); modules take it from here.
from services.kit.support.durable_files import fsync_dir

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CHUNK_BYTES", "fsync_dir", "fsync_file", "sha256_file"]

# Read size for hashing and copying: large enough that the syscall count does not matter.
CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    """Sync a written file's bytes to disk."""
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())
