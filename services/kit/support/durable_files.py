"""Making a folder's entries durable: the kit's own file writers and the domain's share it."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(folder: Path) -> None:
    """Sync a folder's entries, so a file created or renamed in it is durable."""
    # Not every platform or filesystem allows opening a directory for that: then the
    # entry is as durable as the platform makes it.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
