"""services.kit.support.setting_aliases: an old milliseconds name moves to the new seconds
name with a deprecation line in the log; the new name wins when both are given."""

from __future__ import annotations

import logging

import pytest

from services.kit.support.setting_aliases import milliseconds_to_seconds

OLD, NEW = "duration_tolerance_ms", "duration_tolerance_s"


def test_the_old_name_becomes_seconds_under_the_new_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="soulspot.settings"):
        moved = milliseconds_to_seconds({OLD: "2500", "url": "x"}, OLD, NEW, where="demo")
    assert moved == {NEW: 2.5, "url": "x"}
    [line] = caplog.records
    assert "demo.duration_tolerance_ms" in line.getMessage()
    assert "deprecated" in line.getMessage()


def test_input_without_the_old_name_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    data = {NEW: 3.0}
    assert milliseconds_to_seconds(data, OLD, NEW, where="demo") is data
    assert caplog.records == []


def test_the_new_name_wins_over_the_old(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="soulspot.settings"):
        moved = milliseconds_to_seconds({OLD: 9000, NEW: 1.5}, OLD, NEW, where="demo")
    assert moved == {NEW: 1.5}
    assert "ignored" in caplog.records[0].getMessage()


def test_a_value_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="milliseconds"):
        milliseconds_to_seconds({OLD: "five seconds"}, OLD, NEW, where="demo")
