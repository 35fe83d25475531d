"""Text matching shared by everything that compares a requested track with a found file.

Pure functions: normalise titles and artists (case, accents, punctuation, "&"), strip the
decorations catalogues add to titles ("(feat. X)", "- Remastered 2011"), and detect version
words (live, remix, karaoke, ...) so a plain request never gets a live recording.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "VERSION_PATTERNS",
    "clean_title",
    "coverage",
    "detect_versions",
    "normalize",
    "tokens",
    "unwanted_versions",
]

# Versions a plain request must not get. Matched after tokenising (so hyphens are spaces),
# word-bounded so "Alive" is not "live" and "Remixed" is still a remix.
VERSION_PATTERNS: dict[str, re.Pattern[str]] = {
    "live": re.compile(r"\blive\b|\bin concert\b|\bunplugged\b"),
    "remix": re.compile(r"\bre ?mix(es|ed)?\b|\brmx\b|\bbootleg\b|\bmash ?up\b"),
    "karaoke": re.compile(r"\bkaraoke\b|\bsing ?along\b"),
    "instrumental": re.compile(r"\binstrumental\b|\binst\b|\boff ?vocal\b"),
    "acoustic": re.compile(r"\bacoustic\b"),
    "cover": re.compile(r"\bcover(ed)?\b|\btribute\b|\bin the style of\b"),
    "demo": re.compile(r"\bdemo\b"),
}

_FEAT = re.compile(r"[\(\[]\s*(feat\.?|ft\.?|featuring|with)\s[^\)\]]*[\)\]]", re.IGNORECASE)
# Catalogues decorate titles ("Song - Remastered 2011", "Song - 2009 Mono Mix"): the suffix is
# not part of what a file is named or tagged, so it must not count against the title match.
_DECORATION = re.compile(
    r"\s-\s.*\b(remaster(ed)?|mono|stereo|deluxe|bonus|anniversary|single version|"
    r"album version|\d{4} mix)\b.*$",
    re.IGNORECASE,
)


def tokens(text: str) -> list[str]:
    """Lower-cased, accent-free alphanumeric words ("&" counts as "and")."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    folded = folded.replace("&", " and ")
    return re.findall(r"[a-z0-9]+", folded)


def normalize(text: str) -> str:
    """The tokens joined by single spaces: "Beyoncé & Co." -> "beyonce and co"."""
    return " ".join(tokens(text))


def clean_title(title: str) -> str:
    """The title without featured-artist brackets and catalogue decorations."""
    return _DECORATION.sub("", _FEAT.sub("", title)).strip()


def detect_versions(text: str) -> set[str]:
    normalized = normalize(text)
    return {name for name, pattern in VERSION_PATTERNS.items() if pattern.search(normalized)}


def unwanted_versions(
    requested_title: str, candidate_texts: Iterable[str], allowed: Iterable[str] = ()
) -> set[str]:
    """Version words the candidate carries that the request neither names nor allows."""
    found: set[str] = set()
    for text in candidate_texts:
        found |= detect_versions(text)
    return found - detect_versions(requested_title) - {a.lower() for a in allowed}


def coverage(wanted: Iterable[str], have: Iterable[str]) -> float:
    """The share of distinct wanted tokens present in `have` (1.0 when nothing is wanted)."""
    wanted_list = list(dict.fromkeys(wanted))
    if not wanted_list:
        return 1.0
    have_set = set(have)
    return sum(1 for t in wanted_list if t in have_set) / len(wanted_list)
