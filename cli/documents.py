"""The CLI's `--json` documents: the router's answers as plain JSON with stable snake_case
field names.

Times are ISO 8601 in UTC (`2026-03-01T12:00:00Z`, null when unset), counts and sequences are
numbers, enums are lower-case words (`active`, `max_attempts`), and an event's payload is its
message in protobuf's JSON mapping with the contract's field names.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from cli.tables import status_name  # one spelling of module statuses for tables and JSON
from services.kit.events.client import unpack_payload
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from google.protobuf import timestamp_pb2

    from soulspot.events.v1 import envelope_pb2
    from soulspot.router.v1 import watches_pb2

__all__ = [
    "consumer_document",
    "dead_letter_document",
    "event_document",
    "status_document",
    "timestamp",
    "watch_document",
]

_DEAD_LETTER_REASONS = {
    router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS: "max_attempts",
    router_pb2.DEAD_LETTER_REASON_CYCLE: "cycle",
    router_pb2.DEAD_LETTER_REASON_DEPTH: "depth",
}


def timestamp(ts: timestamp_pb2.Timestamp) -> str | None:
    """ISO 8601 in UTC to the millisecond; None when unset."""
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_document(env: envelope_pb2.EventEnvelope) -> dict[str, Any]:
    """One stored event: its envelope and its payload."""
    try:
        payload: Any = json_format.MessageToDict(
            unpack_payload(env), preserving_proto_field_name=True
        )
    except Exception:
        payload = None  # a type this command's contracts do not know: payload_type says which
    return {
        "sequence": env.sequence,
        "event_id": env.event_id,
        "event_type": env.event_type,
        "schema_version": env.schema_version,
        "stored_at": timestamp(env.stored_at),
        "source_module": env.source_module,
        "subject": env.subject,
        "correlation_id": env.correlation_id,
        "causation_id": env.causation_id,
        "payload_type": env.payload.type_url.rpartition("/")[2],
        "payload": payload,
    }


def dead_letter_document(dl: router_pb2.DeadLetter) -> dict[str, Any]:
    """One dead letter: why it is parked, and the event it keeps."""
    return {
        "dead_letter_id": dl.dead_letter_id,
        "consumer": dl.consumer,
        "reason": _DEAD_LETTER_REASONS.get(dl.reason, "unspecified"),
        "attempts": dl.attempts,
        "last_error": dl.last_error,
        "parked_at": timestamp(dl.parked_at),
        "event": event_document(dl.event),
    }


def consumer_document(consumer: router_pb2.ConsumerInfo) -> dict[str, Any]:
    return {
        "name": consumer.name,
        "event_types": list(consumer.event_types),
        "acked_sequence": consumer.acked_sequence,
        "lag": consumer.lag,
        "subscribers": consumer.subscribers,
        "in_flight": consumer.in_flight,
        "served_by": consumer.served_by,
    }


def watch_document(watch: watches_pb2.PlaylistWatch) -> dict[str, Any]:
    """A watched playlist: its schedule (`every_s`, seconds) and its last run."""
    return {
        "playlist_id": watch.playlist_id,
        "name": watch.name,
        "every_s": watch.every.ToTimedelta().total_seconds(),
        "running": watch.running,
        "next_run_at": timestamp(watch.next_run_at),
        "last_run_at": timestamp(watch.last_run_at),
        "last_result": watch.last_result,
        "last_run_failed": watch.last_run_failed,
        "tracks_in_playlist": watch.tracks_in_playlist,
        "last_requested": watch.last_requested,
        "tracks_known": watch.tracks_known,
        "owner": watch.owner,
        "created_at": timestamp(watch.created_at),
    }


def status_document(reply: router_pb2.GetStatusResponse) -> dict[str, Any]:
    """`soulspot status --json`: modules, capabilities, warnings, work and consumers."""
    return {
        "modules": [
            {
                "name": m.name,
                "status": status_name(m.status),
                "reason": m.reason,
                "address": m.address,
                "breaker": m.breaker,
                "since": timestamp(m.since),
                "version": m.version,
            }
            for m in reply.modules
        ],
        "capabilities": [
            {
                "name": c.name,
                "available": c.available,
                "providers": [
                    {
                        "module": p.module,
                        "priority": p.priority,
                        "status": status_name(p.status),
                        "routable": p.routable,
                    }
                    for p in c.providers
                ],
            }
            for c in reply.capabilities
        ],
        "warnings": [
            {
                "module": w.module,
                "operation": w.operation,
                "status": w.status,
                "impact": w.impact,
                "action": w.action,
            }
            for w in reply.warnings
        ],
        "in_flight": [
            {
                "kind": item.kind,
                "id": item.id,
                "description": item.description,
                "started_at": timestamp(item.started_at),
                "percent": item.percent,
            }
            for item in reply.in_flight
        ],
        "consumers": [consumer_document(c) for c in reply.consumers],
        "watched_playlists": [watch_document(w) for w in reply.watched_playlists],
        "xds_clients": [
            json_format.MessageToDict(c, preserving_proto_field_name=True)
            for c in reply.xds_clients
        ],
        "last_sequence": reply.last_sequence,
        "dead_letters": reply.dead_letters,
        "started_at": timestamp(reply.started_at),
        "answered_by": reply.answered_by,
    }
