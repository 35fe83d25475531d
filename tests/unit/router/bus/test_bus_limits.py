"""The bus's limits as settings: each bounded (a typo fails at start-up), defaults within the
bounds they sit under, and the tail cache bounded in bytes as well as in count."""

from __future__ import annotations

import pydantic
import pytest

from router.bus.settings import MIB, BusSettings
from router.bus.store import AppendResult
from router.bus.tail import TailCache
from soulspot.events.v1 import envelope_pb2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_event_bytes", 0),
        ("max_event_bytes", 64 * MIB),
        ("max_in_flight_bytes", 0),
        ("max_ack_timeout_s", 0),
        ("max_ack_timeout_s", 7 * 86400),
        ("max_in_flight_cap", 0),
        ("max_attributes", -1),
        ("max_consumers_per_identity", 0),
        ("max_subscribe_streams_per_identity", 0),
        ("max_list_bytes", 64 * MIB),
        ("tail_cache_max_bytes", 0),
    ],
)
def test_a_bound_out_of_its_range_fails_at_start(field: str, value: float) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        BusSettings.model_validate({field: value})


def test_defaults_must_sit_within_their_bounds() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_ack_timeout_s"):
        BusSettings(default_ack_timeout_s=120, max_ack_timeout_s=60)
    with pytest.raises(pydantic.ValidationError, match="max_in_flight_cap"):
        BusSettings(default_max_in_flight=100, max_in_flight_cap=10)
    with pytest.raises(pydantic.ValidationError, match="max_event_bytes"):
        BusSettings(max_payload_bytes=2 * MIB, max_event_bytes=1 * MIB)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.settings import RouterSettings

    monkeypatch.setenv("SOULSPOT_BUS__MAX_EVENT_BYTES", "2097152")
    monkeypatch.setenv("SOULSPOT_ROUTER__MAX_REGISTER_STREAMS_PER_IDENTITY", "5")
    settings = RouterSettings()
    assert settings.bus.max_event_bytes == 2 * MIB
    assert settings.router.max_register_streams_per_identity == 5


def _result(seq: int, size: int) -> AppendResult:
    env = envelope_pb2.EventEnvelope(event_id=f"e{seq}", subject="x" * size, sequence=seq)
    return AppendResult(sequence=seq, envelope=env, duplicate=False, parked=False)


def test_tail_cache_keeps_at_most_its_bytes_newest_first() -> None:
    cache = TailCache(size=1000, last_sequence=0, max_bytes=100_000)
    for seq in range(1, 101):
        cache.add([_result(seq, 10_000)])
    assert cache.bytes <= 100_000
    assert len(cache) < 11
    events, scanned = cache.read_after(cache.floor, 1000) or ([], 0)
    assert [e.sequence for e in events] == list(range(cache.floor + 1, 101))
    assert scanned == 100
    # Older positions are read from the store, not from the cache.
    assert cache.read_after(cache.floor - 1, 10) is None


def test_tail_cache_keeps_one_event_larger_than_its_bytes() -> None:
    cache = TailCache(size=10, last_sequence=0, max_bytes=1000)
    cache.add([_result(1, 5000)])
    assert len(cache) == 1
    assert cache.read_after(0, 10) is not None
