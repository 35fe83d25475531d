from __future__ import annotations

import pytest

from router.bus.event_bus import cycle_parking
from router.bus.patterns import PatternSet, pattern_error
from router.bus.store import AppendResult
from router.bus.tail import TailCache
from router.bus.validate import envelope_violations
from services.kit.events.client import build_envelope
from services.kit.events.registry import EventRegistry
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2
from soulspot.router.v1 import router_pb2


@pytest.mark.parametrize(
    ("patterns", "event_type", "hit"),
    [
        (["download.*"], "download.completed", True),
        (["download.*"], "download.completed.for_source", False),
        (["download.**"], "download.completed.for_source", True),
        (["*"], "track.ready", True),
        (["**"], "module.status_changed", True),
        (["track.ready"], "track.readyx", False),
        ([], "anything.at_all", True),
        (["*.ready"], "track.ready", True),
    ],
)
def test_patterns(patterns: list[str], event_type: str, hit: bool) -> None:
    assert PatternSet(patterns).matches(event_type) is hit


def test_bad_patterns_are_named() -> None:
    assert pattern_error("download..x") is not None
    assert pattern_error("Download.*") is not None
    assert pattern_error("download.*") is None


def test_registry_is_discovered_from_the_contracts() -> None:
    registry = EventRegistry.discover()
    assert {
        "download.started",
        "download.progress",
        "download.completed",
        "download.failed",
        "download.completed.for_source",
        "metadata.enriched",
        "track.imported",
        "track.ready",
        "pipeline.step_skipped",
        "playlist.sync_requested",
        "module.status_changed",
    } <= registry.event_types
    schema = registry.get("download.completed", 1)
    assert schema is not None
    assert schema.full_name == "soulspot.events.v1.DownloadCompleted"
    assert registry.get("download.completed", 2) is None


def _completed() -> download_pb2.DownloadCompleted:
    return download_pb2.DownloadCompleted(
        download_id="d",
        track=references_pb2.TrackReference(title="t", artist="a"),
        file=references_pb2.FileReference(path="/p"),
    )


def test_violations_name_nested_payload_fields() -> None:
    registry = EventRegistry.discover()
    payload = _completed()
    payload.ClearField("file")
    payload.track.artist = ""
    env = build_envelope(payload, source_module="soulseek")
    env.ClearField("occurred_at")
    violations, parsed = envelope_violations(env, registry, max_payload_bytes=1 << 20)
    assert parsed is not None
    assert {v.field for v in violations} == {
        "event.occurred_at",
        "event.payload.track.artist",
        "event.payload.file",
    }


def test_an_empty_envelope_lists_every_required_field() -> None:
    registry = EventRegistry.discover()
    violations, _ = envelope_violations(
        envelope_pb2.EventEnvelope(), registry, max_payload_bytes=10
    )
    assert {v.field for v in violations} == {
        "event.event_id",
        "event.event_type",
        "event.schema_version",
        "event.source_module",
        "event.occurred_at",
        "event.payload",
    }


def _hop_env(chain: list[tuple[str, str]], own: tuple[str, str]) -> envelope_pb2.EventEnvelope:
    env = envelope_pb2.EventEnvelope(event_type=own[0], source_module=own[1])
    for event_type, module in chain:
        env.causation_chain.add(event_type=event_type, source_module=module)
    return env


def test_cycle_guard() -> None:
    a, b = ("download.completed", "soulseek"), ("track.ready", "router")
    assert cycle_parking(_hop_env([a], b), 16) is None
    cycle = cycle_parking(_hop_env([a, b], a), 16)
    assert cycle is not None
    assert cycle.reason == router_pb2.DEAD_LETTER_REASON_CYCLE
    assert "download.completed@soulseek -> track.ready@router" in cycle.detail
    deep = [(f"t{i}.x", "m") for i in range(17)]
    depth = cycle_parking(_hop_env(deep, b), 16)
    assert depth is not None
    assert depth.reason == router_pb2.DEAD_LETTER_REASON_DEPTH
    assert cycle_parking(_hop_env(deep[:16], b), 16) is None


def _result(seq: int, parked: bool = False) -> AppendResult:
    return AppendResult(seq, False, envelope_pb2.EventEnvelope(sequence=seq), parked=parked)


def test_tail_cache_is_bounded_and_reports_gaps() -> None:
    cache = TailCache(3, 10)
    cache.add([_result(11), _result(12, parked=True), _result(13), _result(14), _result(15)])
    assert len(cache) == 3
    assert cache.read_after(10, 10) is None  # evicted: read the store instead
    events, scanned = cache.read_after(11, 10) or ([], 0)
    assert [e.sequence for e in events] == [13, 14, 15]
    assert scanned == 15
    events, scanned = cache.read_after(13, 1) or ([], 0)
    assert [e.sequence for e in events] == [14]
    assert scanned == 14
    assert cache.read_after(15, 5) == ([], 15)
