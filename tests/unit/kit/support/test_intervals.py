"""Intervals as people write them: parsed to seconds, written back the same way."""

from __future__ import annotations

import pytest

from services.kit.support.intervals import format_interval, parse_interval


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6h", 21_600),
        ("90m", 5_400),
        ("1d", 86_400),
        ("1h30m", 5_400),
        ("45s", 45),
        ("2w", 1_209_600),
        (" 1H 30M ", 5_400),
        ("1.5h", 5_400),
    ],
)
def test_parse_interval_reads_number_unit_pairs(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "6h-", "-6h", "six hours", "1h30", "1" * 80])
def test_parse_interval_refuses_anything_else_saying_how_to_write_it(text: str) -> None:
    with pytest.raises(ValueError, match=r"interval"):
        parse_interval(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (21_600, "6h"),
        (5_400, "1h30m"),
        (86_400 + 3_600, "1d1h"),
        (300, "5m"),
        (30 * 86_400, "30d"),
        (0, "0s"),
    ],
)
def test_format_interval_writes_largest_units_first(seconds: float, text: str) -> None:
    assert format_interval(seconds) == text


def test_format_then_parse_gives_the_same_seconds() -> None:
    for seconds in (300, 5_400, 21_600, 86_400 * 30):
        assert parse_interval(format_interval(seconds)) == seconds
