"""Small JSON files holding secrets (a Spotify refresh token): readable by their owner alone,
replaced whole.

The file is mode 0600 in a folder of mode 0700, written under a temporary name (created 0600,
so the secret is never readable by others even for a moment), synced, renamed over the old
one and the folder synced. Its content is never logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import TYPE_CHECKING, Any

from services.kit.support.durable_files import fsync_dir

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["FILE_MODE", "FOLDER_MODE", "read_secret_json", "write_secret_json"]

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def write_secret_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` as JSON, mode 0600, its folder made (or narrowed to) 0700."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    os.chmod(folder, FOLDER_MODE)
    temporary = folder / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_dir(folder)


def read_secret_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when there is no such file. ValueError when the
    file is not a JSON object (its content is not repeated in the message)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data
