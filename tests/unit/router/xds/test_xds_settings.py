"""`SOULSPOT_ROUTER__XDS__*`: on by default, read from the environment, every bound checked."""

from __future__ import annotations

import pydantic
import pytest

from router.settings import RouterSettings


def test_enabled_by_default_and_turned_off_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SOULSPOT_CONFIG", raising=False)
    assert RouterSettings().router.xds.enabled
    monkeypatch.setenv("SOULSPOT_ROUTER__XDS__ENABLED", "false")
    monkeypatch.setenv("SOULSPOT_ROUTER__XDS__MAX_STREAMS_PER_IDENTITY", "4")
    xds = RouterSettings().router.xds
    assert not xds.enabled
    assert xds.max_streams_per_identity == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_STREAMS_PER_IDENTITY", "0"),
        ("MAX_RESOURCE_NAMES", "100001"),
        ("PUSH_DEBOUNCE_S", "0.5"),
        ("MAX_RETRIES", "5"),
        ("WARMUP_S", "61"),
        ("OUTLIER_FAILURE_PERCENT", "101"),
    ],
)
def test_a_value_out_of_range_stops_the_router(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.delenv("SOULSPOT_CONFIG", raising=False)
    monkeypatch.setenv(f"SOULSPOT_ROUTER__XDS__{name}", value)
    with pytest.raises(pydantic.ValidationError, match=name.lower()):
        RouterSettings()
