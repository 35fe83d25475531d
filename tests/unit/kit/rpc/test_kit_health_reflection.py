from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from services.kit.rpc.channel import check_health, open_channel, wait_for_ready
from services.kit.rpc.server import KitServer
from tests.helpers.echo_service import SERVICE, Echo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _check(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


async def test_check_reports_overall_and_each_service_serving(
    server: KitServer, channel: grpc.aio.Channel
) -> None:
    check = _check(channel)
    assert (await check(health_pb2.HealthCheckRequest(service=""))).status == SERVING
    assert (await check(health_pb2.HealthCheckRequest(service=SERVICE))).status == SERVING
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_set_status_flips_a_service_and_keeps_the_reason(
    server: KitServer, channel: grpc.aio.Channel
) -> None:
    await server.set_status(SERVICE, False, "slskd unreachable")
    assert not await check_health(channel, SERVICE)
    assert await check_health(channel, "")  # the others are untouched
    assert server.health_status()[SERVICE] == (False, "slskd unreachable")

    await server.set_status(SERVICE, True)
    assert await check_health(channel, SERVICE)
    assert server.health_status()[SERVICE] == (True, None)


async def test_status_set_before_start_is_kept() -> None:
    kit_server = KitServer("kittest")
    Echo().add_to(kit_server)
    await kit_server.set_status(SERVICE, False, "no credentials")
    async with kit_server, open_channel(kit_server.address) as channel:
        assert not await check_health(channel, SERVICE)
        assert kit_server.health_status()[SERVICE] == (False, "no credentials")


async def test_watch_sees_changes_and_ends_at_shutdown() -> None:
    kit_server = KitServer("kittest", grace_s=5.0)
    Echo().add_to(kit_server)
    async with kit_server, open_channel(kit_server.address) as channel:
        watch = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        call = watch(health_pb2.HealthCheckRequest(service=SERVICE))
        stream: AsyncIterator[Any] = call.__aiter__()
        assert (await anext(stream)).status == SERVING
        await kit_server.set_status(SERVICE, False, "down")
        assert (await anext(stream)).status == NOT_SERVING
        await kit_server.set_status(SERVICE, True)
        assert (await anext(stream)).status == SERVING

        started = time.monotonic()
        await kit_server.stop()
        # The watcher is told NOT_SERVING and its stream ends: it does not hold the 5 s grace.
        seen = [r.status async for r in stream]
        assert NOT_SERVING in seen
        assert time.monotonic() - started < 2
        assert await call.code() == grpc.StatusCode.OK


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = info(iter([request]))
    responses = [r async for r in call]
    assert len(responses) == 1
    return responses[0]


async def test_reflection_lists_services_and_serves_their_files(
    server: KitServer, channel: grpc.aio.Channel
) -> None:
    listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert names == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    files = await _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
    )
    assert files.file_descriptor_response.file_descriptor_proto


async def test_stop_is_idempotent_and_start_twice_fails() -> None:
    kit_server = KitServer("kittest")
    await kit_server.start()
    with pytest.raises(RuntimeError):
        await kit_server.start()
    await asyncio.gather(kit_server.stop(0), kit_server.stop(0))
    await kit_server.stop()


async def test_wait_for_ready_times_out_when_nothing_listens() -> None:
    with pytest.raises(TimeoutError):
        await wait_for_ready("127.0.0.1:1", 0.3)


async def test_wait_for_ready_returns_once_serving(server: KitServer) -> None:
    await wait_for_ready(server.address, 2)
