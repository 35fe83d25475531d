"""The services' log files under <state>/logs: their last lines, and the reason of the last
NOT_SERVING a module logged."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

LOG_TAIL_LINES = 20


def logged_reason(path: Path, *, max_bytes: int = 256 * 1024) -> str:
    """The reason of the last NOT_SERVING a module logged (kit JSON log lines), or ""."""
    try:
        with path.open("rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, size - max_bytes))
            lines = log_file.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if '"reason"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("status") == "NOT_SERVING":
            return str(record.get("reason") or "")
        if isinstance(record, dict) and record.get("msg") == "serving":
            return ""
    return ""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
