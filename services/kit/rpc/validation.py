"""Enforce `google.api.field_behavior = REQUIRED` on protobuf messages.

proto3 has no required fields, so the contracts mark them with the field_behavior option
and every server checks them here before a handler sees the request.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from services.kit.rpc.errors import InvalidArgument, abort_with
from services.kit.rpc.handler_wrapping import wrap_handler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from google.protobuf.descriptor import Descriptor, OneofDescriptor

FieldViolation = error_details_pb2.BadRequest.FieldViolation

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_STRINGLIKE = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to check on one message type, computed once per descriptor."""

    required: tuple[FieldDescriptor, ...]  # required fields outside real oneofs
    required_oneofs: tuple[OneofDescriptor, ...]  # real oneofs with a required member
    has_message_fields: bool  # whether set sub-messages must be walked at all


_plans: dict[Descriptor, _Plan] = {}


def _is_required(field: FieldDescriptor) -> bool:
    if not field.has_options:
        return False
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviors


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _plans.get(descriptor)
    if plan is not None:
        return plan
    # The descriptor API does not say which oneofs are synthetic (proto3 `optional`); the
    # descriptor proto does, and this runs once per type.
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    synthetic = {f.name for f in proto.field if f.proto3_optional}
    required: list[FieldDescriptor] = []
    oneofs: dict[str, OneofDescriptor] = {}
    for field in descriptor.fields:
        if not _is_required(field):
            continue
        oneof = field.containing_oneof
        if oneof is not None and field.name not in synthetic:
            oneofs[oneof.name] = oneof
        else:
            required.append(field)
    plan = _Plan(
        required=tuple(required),
        required_oneofs=tuple(oneofs.values()),
        has_message_fields=any(
            f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE for f in descriptor.fields
        ),
    )
    _plans[descriptor] = plan
    return plan


def _is_missing(msg: Message, field: FieldDescriptor) -> bool:
    value = getattr(msg, field.name)
    if field.is_repeated:
        return len(value) == 0
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return not msg.HasField(field.name)
    if field.has_presence and not msg.HasField(field.name):
        return True
    if field.type in _STRINGLIKE:
        return len(value) == 0
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        if value == 0:
            return True
        enum_type = field.enum_type
        enum_value = enum_type.values_by_number.get(value) if enum_type is not None else None
        return enum_value is not None and enum_value.name.endswith("_UNSPECIFIED")
    # Other scalars without presence: the default (zero) is indistinguishable from unset.
    return not field.has_presence and not value


def _walk(msg: Message, prefix: str, out: list[Any]) -> None:
    # DESCRIPTOR's declared type is a union of the pure-Python and upb classes.
    plan = _plan(cast("Descriptor", msg.DESCRIPTOR))
    for field in plan.required:
        if _is_missing(msg, field):
            path = prefix + field.name
            out.append(FieldViolation(field=path, description=f"field {path} is required"))
    for oneof in plan.required_oneofs:
        if msg.WhichOneof(oneof.name) is None:
            path = prefix + oneof.name
            names = " | ".join(f.name for f in oneof.fields)
            out.append(
                FieldViolation(field=path, description=f"field {path} is required (one of {names})")
            )
    if not plan.has_message_fields:
        return
    # ListFields yields only populated fields, so unset sub-messages cost nothing.
    for field, value in msg.ListFields():
        if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE or field.is_extension:
            continue
        path = prefix + field.name
        entry_type = cast("Descriptor", field.message_type)  # set: the field is a message
        if entry_type.GetOptions().map_entry:
            value_field = entry_type.fields_by_name["value"]
            if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                for key in value:
                    _walk(value[key], f"{path}[{key!r}].", out)
        elif field.is_repeated:
            for index, item in enumerate(value):
                _walk(item, f"{path}[{index}].", out)
        else:
            _walk(value, f"{path}.", out)


# Per message type: whether a message of it lacks nothing (None: nothing it or its
# sub-messages hold can be required).
_checks: dict[Descriptor, Callable[[Message], bool] | None] = {}
_building: set[Descriptor] = set()  # types whose check is being built (a type holding itself)


def _needs_check(descriptor: Descriptor, seen: frozenset[Descriptor] = frozenset()) -> bool:
    """Whether a message of this type, or one it holds, has a required field (a type that
    holds itself is taken to: the walk would look)."""
    if descriptor in _checks:
        return _checks[descriptor] is not None
    if descriptor in seen:
        return True
    plan = _plan(descriptor)
    if plan.required or plan.required_oneofs:
        return True
    seen = seen | {descriptor}
    return any(
        _needs_check(cast("Descriptor", f.message_type), seen)
        for f in descriptor.fields
        if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
    )


def _field_missing(field: FieldDescriptor) -> Callable[[Message], bool]:
    """_is_missing for one field, specialised for the common kinds."""
    name = field.name
    if field.is_repeated:
        return lambda msg: len(getattr(msg, name)) == 0
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return lambda msg: not msg.HasField(name)
    if field.type in _STRINGLIKE and not field.has_presence:
        return lambda msg: not getattr(msg, name)
    # Enums, optional and other scalars: the general rule.
    return lambda msg: _is_missing(msg, field)


def _sub_complete(field: FieldDescriptor) -> Callable[[Message], bool] | None:
    """Whether the populated sub-messages of a message field lack nothing, or None when
    they cannot lack anything."""
    name = field.name
    entry_type = cast("Descriptor", field.message_type)
    if entry_type.GetOptions().map_entry:
        value_field = entry_type.fields_by_name["value"]
        if value_field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
            return None
        value_type = cast("Descriptor", value_field.message_type)
        if not _needs_check(value_type):
            return None
        return lambda msg: all(_complete(v) for v in getattr(msg, name).values())
    if not _needs_check(entry_type):
        return None
    if field.is_repeated:
        return lambda msg: all(_complete(v) for v in getattr(msg, name))
    check = _check(entry_type) if entry_type not in _building else None

    def complete(msg: Message) -> bool:
        if not msg.HasField(name):
            return True
        inner = check or _checks[entry_type]  # a type holding itself: built by now
        return inner is None or inner(getattr(msg, name))

    return complete


def _check(descriptor: Descriptor) -> Callable[[Message], bool] | None:
    if descriptor in _checks:
        return _checks[descriptor]
    if not _needs_check(descriptor):
        _checks[descriptor] = None
        return None
    plan = _plan(descriptor)
    missing = [_field_missing(f) for f in plan.required]
    oneofs = [o.name for o in plan.required_oneofs]
    _building.add(descriptor)
    try:
        subs = [
            sub
            for f in descriptor.fields
            if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
            and (sub := _sub_complete(f)) is not None
        ]
    finally:
        _building.discard(descriptor)

    def complete(msg: Message) -> bool:
        for lacks in missing:
            if lacks(msg):
                return False
        for oneof in oneofs:
            if msg.WhichOneof(oneof) is None:
                return False
        for sub in subs:  # noqa: SIM110 - a loop: all() over a generator costs more here
            if not sub(msg):
                return False
        return True

    _checks[descriptor] = complete
    return complete


def _complete(msg: Message) -> bool:
    """Whether `msg` lacks no required field, its populated sub-messages included: what
    `_walk` would find nothing in, without building paths (the common case, and the cheap
    one: the walk runs only to name what is missing)."""
    check = _check(cast("Descriptor", msg.DESCRIPTOR))
    return check is None or check(msg)


def required_violations(msg: Message) -> list[Any]:
    """One BadRequest.FieldViolation per missing required field, with its path
    (`track.title`, `items[2].title`), walking every populated sub-message."""
    out: list[Any] = []
    if not _complete(msg):
        _walk(msg, "", out)
    return out


def validate_request(msg: Message) -> None:
    """Raise InvalidArgument with a BadRequest detail naming every missing required field."""
    violations = required_violations(msg)
    if violations:
        fields = ", ".join(v.field for v in violations)
        raise InvalidArgument(
            f"{msg.DESCRIPTOR.full_name}: missing required fields: {fields}",
            details=[error_details_pb2.BadRequest(field_violations=violations)],
        )


def check_required(request: object) -> None:
    """validate_request for a handler's request: messages are checked, anything else
    (raw bytes a proxy forwards) is the handler's own business."""
    if isinstance(request, Message):
        validate_request(request)


class RequiredFieldsInterceptor(grpc.aio.ServerInterceptor):
    """Answers INVALID_ARGUMENT (with BadRequest details) to a unary request missing a
    required field, before the handler runs. Streamed requests are the handler's to check."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        return wrap_handler(handler, _validated)


@asynccontextmanager
async def _validated(
    context: grpc.aio.ServicerContext[Any, Any], request: object
) -> AsyncIterator[None]:
    try:
        check_required(request)
    except InvalidArgument as err:
        await abort_with(context, err)
    yield
