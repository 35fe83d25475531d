"""Placing a file in the library without ever losing, truncating or overwriting one.

A placement is two-phase: `place` makes the file appear at its destination while the source
still exists (a hard link on the same filesystem, a fully written and fsynced copy across
filesystems), the caller commits the library store, and only then `Placement.finish` removes the
source (for a move). If anything fails before the commit, `Placement.undo` removes what was
placed and the source is exactly as it was. Existing files are never replaced: the final
name is claimed with a no-clobber `os.link`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.domain.files import fsync_dir, fsync_file

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Placement", "place", "same_filesystem"]

log = logging.getLogger("soulspot.library")

# Errors meaning "this filesystem has no hard links": fall back to a checked rename.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV})


def same_filesystem(source: Path, dest_dir: Path) -> bool:
    return source.stat().st_dev == dest_dir.stat().st_dev


@dataclass
class Placement:
    source: Path
    dest: Path
    # "link": dest is a second name of the source's inode; "rename": the source was renamed
    # (filesystems without hard links); "copy": dest is an independent copy.
    method: str
    keep_source: bool

    def undo(self) -> None:
        """Before the store commit: take the placed file away, the source as it was."""
        if self.method == "rename":
            # The only copy is at dest: put it back (no-clobber: the source name is free).
            os.rename(self.dest, self.source)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.dest.unlink()
        fsync_dir(self.dest.parent)

    def finish(self) -> None:
        """After the store commit: drop the source of a move. A failure here leaves an extra
        copy behind, never a missing file, so it is logged rather than raised."""
        if self.keep_source or self.method == "rename":
            return
        try:
            self.source.unlink()
        except OSError as err:
            log.warning(
                "imported, but the source could not be removed",
                extra={"path": str(self.source), "error": str(err), "impact": "extra copy"},
            )


def _claim(existing: Path, dest: Path) -> str:
    """Give `existing` the name `dest` unless dest exists (FileExistsError). "link" when
    `existing` keeps its own name as well, "rename" when it moved."""
    try:
        os.link(existing, dest)
        return "link"
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in _NO_LINKS:
            raise
    # No hard links here (FAT, some network shares): rename after a check. The check and the
    # rename are not one step, but imports are serialised, so only a foreign writer can race.
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dest))
    os.rename(existing, dest)
    return "rename"


def place(source: Path, dest: Path, *, keep_source: bool, cross_device: bool) -> Placement:
    """Make `dest` hold the source's bytes; FileExistsError when dest is taken."""
    if not cross_device and not keep_source:
        try:
            method = _claim(source, dest)
        except OSError as err:
            # One device, two mounts (bind mounts, container volumes): st_dev matches, yet
            # link and rename both refuse with EXDEV. Copy, as across filesystems.
            if err.errno != errno.EXDEV:
                raise
        else:
            fsync_dir(dest.parent)
            return Placement(source, dest, method, keep_source)
    # A copy (asked for, or across filesystems): written in full under a temporary name in the
    # destination folder, fsynced, and only then given its real name.
    fd, temp_name = tempfile.mkstemp(prefix=".soulspot-import-", suffix=".part", dir=dest.parent)
    os.close(fd)
    temp = dest.parent / os.path.basename(temp_name)
    try:
        shutil.copyfile(source, temp)
        shutil.copymode(source, temp)
        fsync_file(temp)
        method = _claim(temp, dest)
        if method == "link":
            temp.unlink()
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return Placement(source, dest, "copy", keep_source)
