"""Publish-time validation of an event envelope and its payload.

An envelope is accepted only when its type is registered, its payload is the message
registered for that type at the envelope's MAJOR version, the payload bytes parse, and
every REQUIRED field (envelope and payload) is present, and the envelope keeps within the
bus's size bounds (the whole envelope, the payload, the attributes and every string), so no
publisher can make the router hold an event larger than its settings allow. Violations name
field paths from the request root, e.g. `event.payload.track.title`, and a bound's violation
names its setting (SOULSPOT_BUS__MAX_EVENT_BYTES).
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

    from router.bus.settings import BusSettings
    from services.kit.events.registry import EventRegistry

FieldViolation = error_details_pb2.BadRequest.FieldViolation
MAX_EVENT_ID_CHARS = 128
SETTING_PREFIX = "SOULSPOT_BUS__"
# The envelope's string fields other than event_id (which has its own, tighter limit).
_STRING_FIELDS = (
    "event_type",
    "schema_version",
    "source_module",
    "correlation_id",
    "causation_id",
    "traceparent",
    "ordering_key",
    "subject",
)
_HOP_FIELDS = ("event_id", "event_type", "source_module")


def setting_name(field: str) -> str:
    """A bus setting's environment variable: max_event_bytes -> SOULSPOT_BUS__MAX_EVENT_BYTES."""
    return SETTING_PREFIX + field.upper()


def bound_violations(
    envelope: envelope_pb2.EventEnvelope, limits: BusSettings, *, prefix: str = "event."
) -> list[Any]:
    """The size bounds an envelope breaks, each naming its setting (the serialized size
    first: it says which lengths need a look at all)."""
    out: list[Any] = []

    def too_long(field: str, what: str, length: int, limit: int, setting: str) -> None:
        if length > limit:
            out.append(
                _violation(
                    field,
                    f"{what} is {length} chars; the limit is {limit} ({setting_name(setting)})",
                )
            )

    # No string holds more characters than the whole envelope has bytes: an envelope
    # smaller than a length limit cannot break it, and its strings need no look (the
    # common case, and the cheap one on the publish path).
    size = envelope.ByteSize()
    max_chars = limits.max_string_field_chars
    long_strings = size > max_chars
    if long_strings:
        for name in _STRING_FIELDS:
            too_long(
                prefix + name,
                name,
                len(getattr(envelope, name)),
                max_chars,
                "max_string_field_chars",
            )
    attributes = envelope.attributes
    if len(attributes) > limits.max_attributes:
        out.append(
            _violation(
                prefix + "attributes",
                f"{len(attributes)} attributes; the limit is {limits.max_attributes} "
                f"({setting_name('max_attributes')})",
            )
        )
    elif size > min(limits.max_attribute_key_chars, limits.max_attribute_value_chars):
        key_max, value_max = limits.max_attribute_key_chars, limits.max_attribute_value_chars
        for key, value in attributes.items():
            if len(key) <= key_max and len(value) <= value_max:
                continue
            field = f"{prefix}attributes[{key[:32]!r}]"
            too_long(
                field,
                "attribute key",
                len(key),
                limits.max_attribute_key_chars,
                "max_attribute_key_chars",
            )
            too_long(
                field,
                "attribute value",
                len(value),
                limits.max_attribute_value_chars,
                "max_attribute_value_chars",
            )
    for i, hop in enumerate(envelope.causation_chain if long_strings else ()):
        for name in _HOP_FIELDS:
            too_long(
                f"{prefix}causation_chain[{i}].{name}",
                name,
                len(getattr(hop, name)),
                max_chars,
                "max_string_field_chars",
            )
        if len(out) > 16:
            break  # enough to tell the publisher what is wrong
    if size > limits.max_event_bytes:
        out.append(
            _violation(
                prefix.rstrip("."),
                f"event is {size} bytes; the limit is {limits.max_event_bytes} bytes "
                f"({setting_name('max_event_bytes')})",
            )
        )
    return out


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


@functools.lru_cache(maxsize=256)
def _version(schema_version: str) -> tuple[int, int, int] | None:
    """parse_version, remembered: publishers repeat a handful of versions."""
    return parse_version(schema_version)


def envelope_violations(
    envelope: envelope_pb2.EventEnvelope,
    registry: EventRegistry,
    *,
    max_payload_bytes: int,
    prefix: str = "event.",
    limits: BusSettings | None = None,
) -> tuple[list[Any], Message | None]:
    """The violations of one envelope, and its parsed payload when it parsed (`limits`: the
    bus's size bounds, checked first: an envelope over them is not looked into further)."""
    if limits is not None:
        bounds = bound_violations(envelope, limits, prefix=prefix)
        if bounds:
            size = len(envelope.payload.value)
            if size > max_payload_bytes:
                bounds.append(
                    _violation(
                        prefix + "payload.value",
                        f"payload is {size} bytes; the limit is {max_payload_bytes} bytes "
                        f"({setting_name('max_payload_bytes')})",
                    )
                )
            return bounds, None
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
                f"payload is {size} bytes; the limit is {max_payload_bytes} bytes "
                f"({setting_name('max_payload_bytes')})",
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
    version = _version(envelope.schema_version)
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
    limits: BusSettings | None = None,
) -> Message:
    """The parsed payload, or InvalidArgument with a BadRequest naming every violation."""
    violations, payload = envelope_violations(
        envelope, registry, max_payload_bytes=max_payload_bytes, prefix=prefix, limits=limits
    )
    if violations or payload is None:
        described = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(
            f"event refused: {described or 'invalid envelope'}",
            details=[error_details_pb2.BadRequest(field_violations=violations)],
        )
    return payload
