"""The bounds look at lengths only where the envelope's size allows a breach, and still
catch every breach there: a long attribute key, a long string field, a long hop field."""

from __future__ import annotations

from router.bus.settings import BusSettings
from router.bus.validate import bound_violations
from services.kit.events.client import build_envelope
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2


def _envelope() -> envelope_pb2.EventEnvelope:
    payload = download_pb2.DownloadCompleted(
        download_id="d1", track=references_pb2.TrackReference(title="t", artist="a")
    )
    env = build_envelope(payload, source_module="folder")
    env.attributes["sent"] = "1"
    return env


def _fields(env: envelope_pb2.EventEnvelope) -> dict[str, str]:
    return {v.field: v.description for v in bound_violations(env, BusSettings())}


def test_an_envelope_within_every_bound_has_no_violations() -> None:
    assert _fields(_envelope()) == {}


def test_an_attribute_key_over_its_limit_is_named() -> None:
    env = _envelope()
    env.attributes["k" * 129] = "v"
    fields = _fields(env)
    (field,) = fields
    assert field.startswith("event.attributes[")
    assert "SOULSPOT_BUS__MAX_ATTRIBUTE_KEY_CHARS" in fields[field]


def test_a_string_field_and_a_hop_field_over_their_limit_are_named() -> None:
    env = _envelope()
    env.subject = "s" * 1025
    env.causation_chain.add(event_id="e", event_type="t" * 1025, source_module="m")
    fields = _fields(env)
    assert "SOULSPOT_BUS__MAX_STRING_FIELD_CHARS" in fields["event.subject"]
    assert "SOULSPOT_BUS__MAX_STRING_FIELD_CHARS" in fields["event.causation_chain[0].event_type"]
