"""RouterSection: durations in seconds named `*_s`, each bounded."""

from __future__ import annotations

import pydantic
import pytest

from router.settings import RouterSection, RouterSettings


def test_durations_are_read_in_seconds_from_their_s_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOULSPOT_ROUTER__HEALTH_POLL_INTERVAL_S", "0.5")
    monkeypatch.setenv("SOULSPOT_ROUTER__ROUTING_TABLE_TTL_S", "12")
    section = RouterSettings().router
    assert (section.health_poll_interval_s, section.routing_table_ttl_s) == (0.5, 12.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("health_poll_interval_s", 0),
        ("health_check_timeout_s", -1),
        ("breaker_failures", 0),
        ("attempt_share", 1.5),
        ("routing_table_ttl_s", 0),
    ],
)
def test_a_value_that_would_hurt_is_refused(name: str, value: float) -> None:
    with pytest.raises(pydantic.ValidationError, match=name):
        RouterSection.model_validate({name: value})
