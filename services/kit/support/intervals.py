"""Intervals written the way people write them: `90m`, `6h`, `1d`, `1h30m`, `45s`.

`parse_interval` turns such text into seconds (a ValueError names what is wrong);
`format_interval` writes seconds back in the same form, largest units first (days at most).
"""

from __future__ import annotations

import re

__all__ = ["UNITS", "format_interval", "parse_interval"]

# Unit -> seconds, largest first (format_interval writes them in this order).
UNITS: dict[str, int] = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
# Longer text is not an interval anyone means; refusing it keeps the regex work bounded.
_MAX_CHARS = 64


def parse_interval(text: str) -> float:
    """Seconds in `text`: one or more number-unit pairs (units w, d, h, m, s), e.g. `1h30m`."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("an interval is empty; write it like 90m, 6h or 1d")
    if len(compact) > _MAX_CHARS:
        raise ValueError(f"an interval is at most {_MAX_CHARS} characters")
    position = 0
    total = 0.0
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match[1]) * UNITS[match[2]]
        position = match.end()
    if position != len(compact):
        raise ValueError(
            f"{text!r} is not an interval; write a number and a unit (s, m, h, d, w), "
            "like 90m, 6h, 1d or 1h30m"
        )
    return total


def format_interval(seconds: float) -> str:
    """`seconds` as `1d6h`, `90m` stays `1h30m`; below a second, `0s`."""
    remaining = round(seconds)
    if remaining <= 0:
        return "0s"
    parts = []
    # Weeks are read but not written: "30d" says more than "4w2d".
    for unit, size in UNITS.items():
        if unit == "w":
            continue
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
