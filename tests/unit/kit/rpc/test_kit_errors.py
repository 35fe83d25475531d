from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit.rpc import errors as kit_errors
from services.kit.rpc.context import CORRELATION_ID_KEY, bind
from services.kit.rpc.errors import (
    ERROR_CLASSES,
    MeshError,
    NotFound,
    Unavailable,
    from_rpc_error,
    is_transient,
)
from tests.helpers.echo_service import SayRequest, say_stub


async def test_rich_error_round_trips_with_details(channel: grpc.aio.Channel) -> None:
    with bind("cid-err"), pytest.raises(grpc.aio.AioRpcError) as raised:
        await say_stub(channel)(SayRequest(text="x", fail_code=grpc.StatusCode.NOT_FOUND.value[0]))
    error = from_rpc_error(raised.value)
    assert isinstance(error, NotFound)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.message == "failing with 5"
    bad = error.detail(error_details_pb2.BadRequest)
    assert bad is not None
    assert [(v.field, v.description) for v in bad.field_violations] == [("text", "is wrong")]
    info = error.detail(error_details_pb2.ErrorInfo)
    assert info is not None
    assert (info.reason, info.domain) == ("TEST", "kittest")
    # The correlation id set before the handler survives the rich abort.
    assert (CORRELATION_ID_KEY, "cid-err") in error.metadata


async def test_plain_status_without_details_maps_to_its_class(channel: grpc.aio.Channel) -> None:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/kittest.v1.Echo/NoSuchMethod"
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(b"")
    error = from_rpc_error(raised.value)
    assert isinstance(error, kit_errors.Unimplemented)
    assert error.details == []


def test_every_non_ok_code_has_exactly_one_class() -> None:
    codes = [c for c in grpc.StatusCode if c != grpc.StatusCode.OK]
    assert set(ERROR_CLASSES) == set(codes)
    for code, cls in ERROR_CLASSES.items():
        assert cls.code == code
        assert issubclass(cls, MeshError)
    assert len(set(ERROR_CLASSES.values())) == len(codes)
    assert not hasattr(kit_errors, "ModuleNotFoundError")


def test_to_status_carries_a_decodable_rich_status() -> None:
    error = kit_errors.InvalidArgument(
        "bad", details=[kit_errors.bad_request({"a": "required"})], metadata=[("k", "v")]
    )
    status = error.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("k", "v") in status.trailing_metadata
    rich = error.to_rpc_status()
    assert rich.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert rpc_status.to_status(rich).details == "bad"
    back = kit_errors.from_rpc_status(rich)
    assert isinstance(back, kit_errors.InvalidArgument)
    assert back.detail(error_details_pb2.BadRequest) is not None


def test_transient_codes() -> None:
    assert is_transient(Unavailable("x"))
    assert is_transient(kit_errors.ResourceExhausted("x"))
    assert is_transient(kit_errors.Aborted("x"))
    assert not is_transient(kit_errors.DeadlineExceeded("x"))
    assert not is_transient(kit_errors.InvalidArgument("x"))
    assert not is_transient(ValueError("x"))
