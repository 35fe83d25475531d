"""The folder section's duration tolerance: seconds under DURATION_TOLERANCE_S, bounded, and
the deprecated DURATION_TOLERANCE_MS still read (as milliseconds)."""

from __future__ import annotations

import pydantic
import pytest

from services.folder.settings import FolderSettings


def test_the_tolerance_is_read_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_FOLDER__DURATION_TOLERANCE_S", "1.5")
    assert FolderSettings().folder.duration_tolerance_s == 1.5


def test_the_deprecated_milliseconds_name_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_FOLDER__DURATION_TOLERANCE_MS", "7000")
    assert FolderSettings().folder.duration_tolerance_s == 7.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DURATION_TOLERANCE_S", "0"),
        ("DURATION_TOLERANCE_S", "601"),
        ("DURATION_TOLERANCE_MS", "0"),
    ],
)
def test_a_tolerance_out_of_bounds_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # The old name is bounded too: its value lands in the new, bounded field.
    monkeypatch.setenv(f"SOULSPOT_FOLDER__{name}", value)
    with pytest.raises(pydantic.ValidationError, match="duration_tolerance_s"):
        FolderSettings()
