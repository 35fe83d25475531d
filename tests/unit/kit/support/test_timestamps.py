"""timestamp_at: a Unix time in float seconds as a Timestamp, seconds and nanoseconds apart."""

from __future__ import annotations

from services.kit.support.timestamps import timestamp_at


def test_whole_and_fractional_seconds_land_in_their_fields() -> None:
    ts = timestamp_at(12.25)
    assert (ts.seconds, ts.nanos) == (12, 250_000_000)


def test_a_current_time_keeps_its_microseconds() -> None:
    # A float holds a current Unix time to about a quarter of a microsecond, not a nanosecond.
    ts = timestamp_at(1_700_000_000.25)
    assert ts.seconds == 1_700_000_000
    assert abs(ts.nanos - 250_000_000) < 1_000


def test_zero_is_the_epoch() -> None:
    ts = timestamp_at(0.0)
    assert (ts.seconds, ts.nanos) == (0, 0)
