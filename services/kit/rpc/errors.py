"""Typed mesh errors that travel as rich gRPC statuses (google.rpc.Status with details).

A handler raises (or `abort_with`s) a `MeshError`; the client gets the same class back from
`from_rpc_error`, details included, so both ends speak in types instead of status codes.
"""

from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

import grpc
from google.protobuf import any_pb2, descriptor_pool, message_factory

# googleapis-common-protos ships .pyi files but no py.typed marker.
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.kit.rpc.policy import RETRYABLE_CODES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Never

    from google.protobuf.message import Message

_M = TypeVar("_M", bound="Message")
_DETAILS_KEY = "grpc-status-details-bin"

MetadataPairs = tuple[tuple[str, str | bytes], ...]


class MeshError(Exception):
    """An error with a gRPC status code, a message and optional google.rpc detail messages."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        details: Iterable[Message] = (),
        metadata: Iterable[tuple[str, str | bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[Message] = list(details)
        # Extra trailing metadata sent with the status (e.g. which module answered).
        self.metadata: MetadataPairs = tuple(metadata)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={len(self.details)})"

    def detail(self, cls: type[_M]) -> _M | None:
        """The first detail of the given type, if any."""
        for item in self.details:
            if isinstance(item, cls):
                return item
        return None

    def to_rpc_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for item in self.details:
            packed = status.details.add()
            if isinstance(item, any_pb2.Any):
                packed.CopyFrom(item)
            else:
                packed.Pack(item)
        return status

    def to_status(self, extra_metadata: Iterable[tuple[str, str | bytes]] = ()) -> grpc.Status:
        """The grpc.Status for `context.abort_with_status`, rich details in trailing metadata.

        `extra_metadata` wins over the error's own metadata for the same key (a relayed
        error must not replace the relaying call's correlation id).
        """
        base = rpc_status.to_status(self.to_rpc_status())
        extra = [(k, v) for k, v in extra_metadata if k != _DETAILS_KEY]
        overridden = {k for k, _ in extra}
        own = [(k, v) for k, v in self.metadata if k not in overridden]
        if not own and not extra:
            return base
        return _Status(base.code, base.details, (*base.trailing_metadata, *own, *extra))


class _Status(namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    """grpc.Status is an empty interface; this is the concrete value abort_with_status reads."""


class InvalidArgument(MeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MeshError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MeshError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(MeshError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(MeshError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(MeshError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(MeshError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(MeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(MeshError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(MeshError):
    code = grpc.StatusCode.INTERNAL


class Cancelled(MeshError):
    code = grpc.StatusCode.CANCELLED


class Aborted(MeshError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(MeshError):
    code = grpc.StatusCode.OUT_OF_RANGE


class DataLoss(MeshError):
    code = grpc.StatusCode.DATA_LOSS


class Unknown(MeshError):
    code = grpc.StatusCode.UNKNOWN


# The one mapping from status code to error class; OK has no error.
ERROR_CLASSES: Mapping[grpc.StatusCode, type[MeshError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}

# Worth another attempt (elsewhere or later): the mesh's table in services.kit.rpc.policy.
TRANSIENT_CODES: frozenset[grpc.StatusCode] = RETRYABLE_CODES


def status_code_of(err: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code an exception stands for, or None when it is not a gRPC error."""
    if isinstance(err, MeshError):
        return err.code
    if isinstance(err, grpc.RpcError) and callable(getattr(err, "code", None)):
        code = err.code()
        return code if isinstance(code, grpc.StatusCode) else None
    return None


def is_transient(err: BaseException) -> bool:
    return status_code_of(err) in TRANSIENT_CODES


def error_for(code: grpc.StatusCode, message: str, **kwargs: object) -> MeshError:
    """An instance of the error class for `code` (UNKNOWN for OK, which is no error)."""
    cls = ERROR_CLASSES.get(code, Unknown)
    return cls(message, **kwargs)  # type: ignore[arg-type]


def bad_request(violations: Mapping[str, str]) -> error_details_pb2.BadRequest:
    """A BadRequest detail from {field path: description}."""
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations.items()
        ]
    )


def _unpack(packed: any_pb2.Any) -> Message:
    """The detail as its own message type when this process knows it, else the Any."""
    type_name = packed.TypeName()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return packed
    message = message_factory.GetMessageClass(descriptor)()
    if not packed.Unpack(message):
        return packed
    return message


def from_rpc_status(
    status: status_pb2.Status, metadata: Sequence[tuple[str, str | bytes]] = ()
) -> MeshError:
    code = _code_from_int(status.code)
    return error_for(
        code, status.message, details=[_unpack(d) for d in status.details], metadata=metadata
    )


def from_rpc_error(err: grpc.aio.AioRpcError) -> MeshError:
    """The typed error for a failed call, with the google.rpc details it carried."""
    trailing: MetadataPairs = tuple(
        (k, v) for k, v in (err.trailing_metadata() or ()) if k != _DETAILS_KEY
    )
    try:
        # AioRpcError has the synchronous code()/details()/trailing_metadata() from_call reads.
        rich = rpc_status.from_call(cast("grpc.Call", err))
    except ValueError:
        # Status proto and call status disagree; trust the call, drop the details.
        rich = None
    if rich is not None:
        return from_rpc_status(rich, trailing)
    return error_for(err.code(), err.details() or "", metadata=trailing)


def _code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


async def abort_with(context: grpc.aio.ServicerContext[object, object], error: MeshError) -> Never:
    """End the call with the error's rich status.

    Trailing metadata the call already carries (the correlation id, router metadata) is kept:
    abort_with_status would otherwise replace it with just the status details.
    """
    existing = tuple(context.trailing_metadata() or ())
    await context.abort_with_status(error.to_status(existing))
