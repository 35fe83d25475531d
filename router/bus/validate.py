"""Publish-time validation of an event envelope and its payload.

An envelope is accepted only when its type is registered, its payload is the message
registered for that type at the envelope's MAJOR version, the payload bytes parse, and
every REQUIRED field (envelope and payload) is present. Violations name field paths from
the request root, e.g. `event.payload.track.title`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2

from services.kit.events.registry import parse_version
from services.kit.rpc.errors import InvalidArgument
from services.kit.rpc.validation import required_violations
from soulspot.events.v1 import envelope_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from services.kit.events.registry import EventRegistry

FieldViolation = error_details_pb2.BadRequest.FieldViolation
MAX_EVENT_ID_CHARS = 128


def _violation(field: str, description: str) -> Any:
    return FieldViolation(field=field, description=description)


def _absent(message: Any, name: str, is_message: bool) -> bool:
    return not message.HasField(name) if is_message else not getattr(message, name)


@functools.cache
def _envelope_required() -> tuple[tuple[str, bool], ...]:
    """The envelope's REQUIRED fields, from its descriptor: (name, is a message).

    A fast path for the hot publish path: the envelope's nested types (Timestamp, Any,
    CausationHop) declare no required fields, so only its own fields need a look; the
    payload gets the full walk."""
    descriptor = envelope_pb2.EventEnvelope.DESCRIPTOR
    out: list[tuple[str, bool]] = []
    for field in descriptor.fields:
        if not field.has_options:
            continue
        behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if field_behavior_pb2.REQUIRED in behaviors:
            out.append((field.name, field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE))
    return tuple(out)


def envelope_violations(
    envelope: envelope_pb2.EventEnvelope,
    registry: EventRegistry,
    *,
    max_payload_bytes: int,
    prefix: str = "event.",
) -> tuple[list[Any], Message | None]:
    """The violations of one envelope, and its parsed payload when it parsed."""
    out: list[Any] = []
    for name, is_message in _envelope_required():
        if _absent(envelope, name, is_message):
            out.append(_violation(prefix + name, f"field {prefix + name} is required"))
    if len(envelope.event_id) > MAX_EVENT_ID_CHARS:
        out.append(
            _violation(prefix + "event_id", f"event_id is longer than {MAX_EVENT_ID_CHARS} chars")
        )
    if not envelope.HasField("payload"):
        return out, None
    size = len(envelope.payload.value)
    if size > max_payload_bytes:
        out.append(
            _violation(
                prefix + "payload.value",
                f"payload is {size} bytes; the limit is {max_payload_bytes} bytes",
            )
        )
        return out, None
    if not envelope.event_type:
        return out, None
    if not registry.knows(envelope.event_type):
        known = ", ".join(sorted(registry.event_types))
        out.append(
            _violation(
                prefix + "event_type",
                f"unknown event type {envelope.event_type!r}; known types: {known}",
            )
        )
        return out, None
    if not envelope.schema_version:
        return out, None
    version = parse_version(envelope.schema_version)
    if version is None:
        out.append(
            _violation(
                prefix + "schema_version",
                f"schema_version {envelope.schema_version!r} is not MAJOR.MINOR.PATCH",
            )
        )
        return out, None
    schema = registry.get(envelope.event_type, version[0])
    if schema is None:
        majors = ", ".join(str(m) for m in registry.majors(envelope.event_type))
        out.append(
            _violation(
                prefix + "schema_version",
                f"{envelope.event_type} has no major version {version[0]} (registered: {majors})",
            )
        )
        return out, None
    type_url = envelope.payload.type_url
    # Any's type URL is "<prefix>/<full message name>"; only the name identifies the type.
    type_name = type_url.rsplit("/", 1)[-1]
    if type_name != schema.full_name:
        out.append(
            _violation(
                prefix + "payload.type_url",
                f"{envelope.event_type} v{schema.major} carries {schema.full_name}, "
                f"not {type_name or '(empty type_url)'}",
            )
        )
        return out, None
    payload = schema.message_class()
    try:
        payload.ParseFromString(envelope.payload.value)
    except DecodeError as err:
        out.append(
            _violation(
                prefix + "payload.value",
                f"payload bytes do not parse as {schema.full_name}: {err}",
            )
        )
        return out, None
    for v in required_violations(payload):
        path = prefix + "payload." + v.field
        out.append(_violation(path, f"field {path} is required"))
    return out, payload


def validate_envelope(
    envelope: envelope_pb2.EventEnvelope,
    registry: EventRegistry,
    *,
    max_payload_bytes: int,
    prefix: str = "event.",
) -> Message:
    """The parsed payload, or InvalidArgument with a BadRequest naming every violation."""
    violations, payload = envelope_violations(
        envelope, registry, max_payload_bytes=max_payload_bytes, prefix=prefix
    )
    if violations or payload is None:
        described = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(
            f"event refused: {described or 'invalid envelope'}",
            details=[error_details_pb2.BadRequest(field_violations=violations)],
        )
    return payload
