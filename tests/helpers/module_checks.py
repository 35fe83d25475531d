"""Checks on a module under test: a recording event bus, health and reflection queries, typed
errors, waiting for a state."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from services.kit.events.client import InMemoryBus
from services.kit.rpc.errors import from_rpc_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from google.rpc import error_details_pb2


def make_bus() -> InMemoryBus:
    """The kit's InMemoryBus: it validates and records what was published."""
    return InMemoryBus(source_module="test")


def event_types(bus: InMemoryBus) -> list[str]:
    return [e.event_type for e in bus.published]


def payloads(bus: InMemoryBus, event_type: str) -> list[Any]:
    return list(bus.payloads(event_type))


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], *, within_s: float = 10.0, what: str = ""
) -> None:
    """Wait until predicate() holds (polling): background work has no completion signal."""
    deadline = time.monotonic() + within_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def health_status(channel: grpc.aio.Channel, service: str) -> int:
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def reflected_services(channel: grpc.aio.Channel) -> set[str]:
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names: set[str] = set()
    async for reply in call:
        names.update(s.name for s in reply.list_services_response.service)
    return names


async def rpc_error(call: Awaitable[Any]) -> Any:
    """The typed MeshError a call failed with (AssertionError when it succeeded)."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return from_rpc_error(err)
    raise AssertionError("the call succeeded")


def violated_fields(error: Any) -> list[str]:
    from google.rpc import error_details_pb2

    detail: error_details_pb2.BadRequest | None = error.detail(error_details_pb2.BadRequest)
    return [v.field for v in detail.field_violations] if detail is not None else []
