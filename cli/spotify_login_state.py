"""Whether a Spotify login is stored, for `soulspot status`: where `soulspot login spotify`
keeps it and when it was last written, read from the file's metadata alone.

The file holds a refresh token; only its presence and modification time are looked at, so
nothing of the token reaches the screen. The time is the last write: the login itself, or the
spotify module keeping the refresh token Spotify rotated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path  # noqa: TC003 (a dataclass field)
from typing import Any

import pydantic

from cli.spotify_login import LoginSettings

__all__ = ["StoredLogin", "login_document", "login_line", "stored_login"]


@dataclass(frozen=True, slots=True)
class StoredLogin:
    path: Path | None
    # When the login file was last written; None when there is none (or it cannot be seen).
    written_at: datetime | None = None
    # Why the file could not be looked at (settings or file system); empty when it could.
    problem: str = ""


def stored_login() -> StoredLogin:
    """The login file the settings name (SOULSPOT_SPOTIFY__TOKEN_FILE, else the state folder's
    spotify/token.json) and when it was written."""
    try:
        path = LoginSettings().token_file()
    except (FileNotFoundError, pydantic.ValidationError) as err:
        return StoredLogin(None, problem=f"settings: {err}")
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return StoredLogin(path)
    except OSError as err:
        return StoredLogin(path, problem=err.strerror or str(err))
    return StoredLogin(path, written_at=datetime.fromtimestamp(written, UTC))


def login_line(login: StoredLogin) -> str:
    """`spotify login: stored (<local time>)`, `none`, or `unknown (<why>)`."""
    if login.problem:
        return f"spotify login: unknown ({login.problem})"
    if login.written_at is None:
        return "spotify login: none"
    return f"spotify login: stored ({login.written_at.astimezone():%Y-%m-%d %H:%M})"


def login_document(login: StoredLogin) -> dict[str, Any]:
    """The same for `--json`: stored, when (UTC, ISO 8601), the file and any problem."""
    written = login.written_at
    return {
        "stored": written is not None,
        "written_at": written.isoformat().replace("+00:00", "Z") if written else None,
        "file": str(login.path) if login.path is not None else None,
        "problem": login.problem,
    }
