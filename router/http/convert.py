"""Router messages as the JSON the dashboard and `/api/*` serve.

Enum values are shortened to what a person reads ("active", not "MODULE_STATUS_ACTIVE"),
timestamps are RFC 3339 strings, and an event's payload is unpacked from its Any.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from services.kit.support.intervals import format_interval

# Imported for their side effect: the payload types join the descriptor pool, so an Any
# holding any event unpacks to JSON.
from soulspot.events.v1 import (  # noqa: F401
    download_pb2,
    module_pb2,
    pipeline_pb2,
    playlist_pb2,
    track_pb2,
)
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from soulspot.events.v1 import envelope_pb2

_MODULE_STATUS_PREFIX = "MODULE_STATUS_"
_DEAD_LETTER_PREFIX = "DEAD_LETTER_REASON_"


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def _short(value: object, prefix: str) -> str:
    text = str(value)
    text = text.removeprefix(prefix).lower()
    return "unknown" if text == "unspecified" else text


def status_json(status: router_pb2.GetStatusResponse) -> dict[str, Any]:
    data = _dict(status)
    for module in data.get("modules", []):
        module["status"] = _short(module.get("status", ""), _MODULE_STATUS_PREFIX)
    for capability in data.get("capabilities", []):
        for provider in capability.get("providers", []):
            provider["status"] = _short(provider.get("status", ""), _MODULE_STATUS_PREFIX)
    # uint64 fields arrive as strings from MessageToDict (JSON numbers lose precision past
    # 2^53); these counters never get there, and numbers are what the page compares.
    data["last_sequence"] = int(status.last_sequence)
    data["dead_letters"] = int(status.dead_letters)
    for consumer, source in zip(data.get("consumers", []), status.consumers, strict=True):
        consumer["lag"] = int(source.lag)
        consumer["acked_sequence"] = int(source.acked_sequence)
    # Durations arrive as "21600s"; the page shows what a person writes ("6h").
    for watch, watched in zip(
        data.get("watched_playlists", []), status.watched_playlists, strict=True
    ):
        watch["every_text"] = format_interval(watched.every.ToTimedelta().total_seconds())
    return data


def _payload(envelope: envelope_pb2.EventEnvelope) -> dict[str, Any]:
    if not envelope.HasField("payload"):
        return {}
    try:
        data = json_format.MessageToDict(envelope.payload, preserving_proto_field_name=True)
    except (json_format.Error, TypeError, KeyError):
        # A payload type this router build does not know: show that instead of failing.
        return {"@type": envelope.payload.type_url}
    return data


def _summary(payload: dict[str, Any]) -> str:
    """A one-line description for tables: artist - title, plus progress or a reason."""
    if "module" in payload and "current" in payload:
        # module.status_changed: "soulseek: active -> inactive (slskd unreachable)"
        before = _short(payload.get("previous", ""), _MODULE_STATUS_PREFIX)
        after = _short(payload["current"], _MODULE_STATUS_PREFIX)
        change = f"{payload['module']}: {before} \u2192 {after}"
        return f"{change} ({payload['reason']})" if payload.get("reason") else change
    track = payload.get("track") or {}
    parts = []
    who = " - ".join(str(track[k]) for k in ("artist", "title") if track.get(k))
    if who:
        parts.append(who)
    if "percent" in payload:
        parts.append(f"{float(payload['percent']):.0f}%")
    for key in ("reason", "message", "detail", "error"):
        if payload.get(key):
            parts.append(str(payload[key]))
            break
    return " · ".join(parts)


def event_json(envelope: envelope_pb2.EventEnvelope) -> dict[str, Any]:
    payload = _payload(envelope)
    trace_id = ""
    pieces = envelope.traceparent.split("-")
    if len(pieces) >= 3:
        trace_id = pieces[1]
    return {
        "sequence": int(envelope.sequence),
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "schema_version": envelope.schema_version,
        "source_module": envelope.source_module,
        "occurred_at": (
            envelope.occurred_at.ToJsonString() if envelope.HasField("occurred_at") else ""
        ),
        "correlation_id": envelope.correlation_id,
        "trace_id": trace_id,
        "subject": envelope.subject,
        "summary": _summary(payload),
        "payload": payload,
    }


def dead_letter_json(letter: router_pb2.DeadLetter) -> dict[str, Any]:
    return {
        "dead_letter_id": int(letter.dead_letter_id),
        "consumer": letter.consumer,
        "reason": _short(router_pb2.DeadLetterReason.Name(letter.reason), _DEAD_LETTER_PREFIX),
        "attempts": int(letter.attempts),
        "last_error": letter.last_error,
        "parked_at": letter.parked_at.ToJsonString() if letter.HasField("parked_at") else "",
        "event": event_json(letter.event),
    }
