"""Event-type patterns: dotted tokens, `*` one token, `**` any number of tokens.

A lone `*` or `**` matches every type. `download.*` matches `download.completed` but not
`download.completed.for_source` (use `download.**` for that), the same token rule NATS uses.
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN_RE = re.compile(r"^[a-z0-9_\-]+$|^\*{1,2}$")


def pattern_error(pattern: str) -> str | None:
    """Why a pattern is invalid, or None."""
    if not pattern:
        return "empty pattern"
    for token in pattern.split("."):
        if not _TOKEN_RE.match(token):
            return f"bad token {token!r} in {pattern!r} (lower-case words, '*' or '**')"
    return None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    if pattern in ("*", "**"):
        return re.compile(r".*")
    parts: list[str] = []
    for token in pattern.split("."):
        if token == "**":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        elif token == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts))


class PatternSet:
    """A set of patterns; an empty set matches every type."""

    __slots__ = ("_cache", "_regexes", "patterns")

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(patterns)
        self._regexes = tuple(_compile(p) for p in self.patterns)
        self._cache: dict[str, bool] = {}

    def matches(self, event_type: str) -> bool:
        hit = self._cache.get(event_type)
        if hit is None:
            hit = not self._regexes or any(r.fullmatch(event_type) for r in self._regexes)
            if len(self._cache) < 4096:
                self._cache[event_type] = hit
        return hit
