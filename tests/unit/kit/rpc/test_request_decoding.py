"""A request whose bytes do not decode is answered INVALID_ARGUMENT, saying which method it was
sent to, for unary and streamed responses alike (raw bytes on a generic channel call to a real
KitServer)."""

from __future__ import annotations

import grpc
import pytest

from services.kit.rpc.channel import open_channel
from services.kit.rpc.server import KitServer

# Field 1 (the service name, a string) announced 127 bytes long with none following.
GARBAGE = b"\x0a\x7f"


async def test_undecodable_unary_request_is_invalid_argument() -> None:
    async with KitServer("decoding") as server, open_channel(server.address) as channel:
        check: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/grpc.health.v1.Health/Check"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(GARBAGE, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/grpc.health.v1.Health/Check is not a valid message" in (caught.value.details() or "")


async def test_undecodable_request_to_a_streaming_method_is_invalid_argument() -> None:
    async with KitServer("decoding") as server, open_channel(server.address) as channel:
        watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            "/grpc.health.v1.Health/Watch"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in watch(GARBAGE, timeout=5):
                pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "/grpc.health.v1.Health/Watch is not a valid message" in (caught.value.details() or "")


async def test_a_valid_request_still_answers() -> None:
    async with KitServer("decoding") as server, open_channel(server.address) as channel:
        check: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/grpc.health.v1.Health/Check"
        )
        # An empty HealthCheckRequest: the whole server, SERVING (status 1, field 1).
        assert await check(b"", timeout=5) == b"\x08\x01"
