"""File confinement: a path that came from a request is acted on only when it is a regular
file inside one of the roots its operation is allowed, and never inside the state folder.

The checks run on the path as given and on what it resolves to: a symlink anywhere in the
given path is refused (it could be swapped for another target between check and use), and so
is anything that is not a regular file (a FIFO would block a reader; a device or socket is
never audio). The answer is INVALID_ARGUMENT with a field violation naming the rule broken.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from services.kit.rpc.errors import InvalidArgument, bad_request

if TYPE_CHECKING:
    from collections.abc import Iterable


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _refuse(field: str, rule: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {rule}", details=[bad_request({field: rule})])


def confined_file(
    raw: str | Path,
    roots: Iterable[Path],
    *,
    field: str,
    forbidden: Iterable[Path] = (),
) -> Path:
    """The resolved path of the regular file `raw` names, or InvalidArgument saying why not.

    `roots` are the folders the operation may act in; `forbidden` are folders it may never
    touch even when a root contains them (the state folder with the event log and catalogs).
    """
    text = str(raw)
    if not text:
        raise _refuse(field, "a path is required")
    if "\x00" in text:
        raise _refuse(field, "the path contains a NUL byte")
    given = Path(text)
    if not given.is_absolute():
        raise _refuse(field, f"{text!r} is not an absolute path")
    if ".." in given.parts:
        raise _refuse(field, f"{text!r} contains '..'")
    # Each root as configured and as resolved: a link above a root (a mount point, a
    # /data -> /srv/data link) is the operator's choice; only what lies below it is checked.
    candidates = [(Path(os.path.abspath(r)), Path(r).resolve()) for r in roots]
    if not candidates:
        raise _refuse(field, "no folder is configured for this operation")
    base: Path | None = None
    real_root: Path | None = None
    for configured, real in candidates:
        for prefix in (configured, real):
            if _inside(given, prefix) and (base is None or len(prefix.parts) > len(base.parts)):
                base, real_root = prefix, real
    if base is None or real_root is None:
        allowed = ", ".join(str(real) for _, real in candidates)
        raise _refuse(field, f"{text!r} is outside the folders this operation may use ({allowed})")
    # Walk below the root one component at a time without following links, so a link in any
    # folder on the way is seen too (Path.resolve would silently follow it).
    current = base
    mode = 0
    for part in given.parts[len(base.parts) :]:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            raise _refuse(field, f"{text!r} does not exist") from None
        except OSError as err:
            raise _refuse(field, f"{text!r} cannot be read: {err.strerror}") from None
        if stat.S_ISLNK(mode):
            raise _refuse(field, f"{text!r} goes through a symbolic link ({current})")
    if not stat.S_ISREG(mode):
        raise _refuse(field, f"{text!r} is not a regular file")
    resolved = given.resolve()
    if not _inside(resolved, real_root):
        raise _refuse(field, f"{text!r} resolves outside {real_root}")
    for folder in forbidden:
        if _inside(resolved, Path(folder).resolve()):
            raise _refuse(field, f"{text!r} is inside the mesh's state folder")
    return resolved


def missing_inside(raw: str | Path, roots: Iterable[Path]) -> bool:
    """Whether `raw` lies, as written, inside one of `roots` and names nothing there.

    Lets an operation answer NOT_FOUND for a file that was inside and is gone (moved by an
    earlier attempt of the same import, say) while a path outside stays INVALID_ARGUMENT:
    it is asked only of paths inside, so existence elsewhere is never revealed.
    """
    text = str(raw)
    given = Path(text)
    if "\x00" in text or not given.is_absolute() or ".." in given.parts:
        return False
    inside = any(
        _inside(given, Path(os.path.abspath(root))) or _inside(given, Path(root).resolve())
        for root in roots
    )
    return inside and not os.path.lexists(given)
