"""Old setting names that keep working after a rename: the value moves to the new name.

Duration settings are seconds named `*_s`; a few were milliseconds named `*_ms` once.
`milliseconds_to_seconds` is meant for a section's `model_validator(mode="before")`: it turns
the old name's milliseconds into the new name's seconds and logs that the old name is
deprecated, so a deployment's environment or config file keeps working and its operator is
told what to change. A log line rather than a DeprecationWarning: those are hidden by default
outside `__main__`, and the reader is whoever runs the process, not a programmer.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["milliseconds_to_seconds"]

log = logging.getLogger("soulspot.settings")


def milliseconds_to_seconds(data: Any, old: str, new: str, *, where: str) -> Any:
    """`data` (a section's raw input) with a value under `old` in milliseconds moved to `new`
    in seconds; `where` names the section in the log line ("soulseek").

    When both names are given, the new one wins: it is the one the documentation states.
    """
    if not isinstance(data, dict) or old not in data:
        return data
    moved = dict(data)
    value = moved.pop(old)
    if new in moved:
        log.warning(
            "setting %s.%s is deprecated and ignored: %s.%s is set too", where, old, where, new
        )
        return moved
    try:
        milliseconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{old} must be a number of milliseconds, not {value!r}") from None
    log.warning(
        "setting %s.%s (milliseconds) is deprecated: set %s.%s (seconds) instead",
        where,
        old,
        where,
        new,
    )
    moved[new] = milliseconds / 1000
    return moved
