"""The soulseek section's duration tolerance: seconds under DURATION_TOLERANCE_S, bounded, and
the deprecated DURATION_TOLERANCE_MS still read (as milliseconds)."""

from __future__ import annotations

import pydantic
import pytest

from services.soulseek.downloader import build_policy
from services.soulseek.settings import SoulseekSettings


def test_the_tolerance_is_read_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_SOULSEEK__DURATION_TOLERANCE_S", "2.5")
    section = SoulseekSettings().soulseek
    assert section.duration_tolerance_s == 2.5
    assert build_policy(section, None).ranking.duration_tolerance_s == 2.5


def test_the_deprecated_milliseconds_name_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_SOULSEEK__DURATION_TOLERANCE_MS", "3000")
    assert SoulseekSettings().soulseek.duration_tolerance_s == 3.0


@pytest.mark.parametrize("value", ["0", "-1", "601"])
def test_a_tolerance_out_of_bounds_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOULSPOT_SOULSEEK__DURATION_TOLERANCE_S", value)
    with pytest.raises(pydantic.ValidationError, match="duration_tolerance_s"):
        SoulseekSettings()
