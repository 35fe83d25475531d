"""Calls into the mesh the way any client makes them: through the router's public address.

Step capabilities go through the router's own capability proxy (routing, fallback and
circuit breakers apply, and the answering module comes back in response metadata);
availability comes from the router's own grpc.health.v1 service, which reports each
capability service SERVING while any provider of it is healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from services.kit.rpc.context import MODULE_KEY, metadata_value
from services.kit.rpc.errors import InvalidArgument, MeshError, from_rpc_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from router.routing.capabilities import Catalog

_log = logging.getLogger(__name__)

_WATCH = "/grpc.health.v1.Health/Watch"
_CHECK = "/grpc.health.v1.Health/Check"
SERVING = health_pb2.HealthCheckResponse.SERVING


class CapabilityCaller:
    """Calls a capability by name with a request given as a dict (proto field names)."""

    def __init__(self, channel: grpc.aio.Channel, catalog: Catalog) -> None:
        self._channel = channel
        self._catalog = catalog

    def service_of(self, capability: str) -> str:
        return self._catalog.by_capability[capability].service

    async def call(
        self,
        capability: str,
        request: dict[str, Any],
        *,
        timeout: float,  # noqa: ASYNC109 (the gRPC deadline)
    ) -> tuple[dict[str, Any], str]:
        """(response as a dict, the module that answered). Raises MeshError."""
        spec = self._catalog.by_capability[capability]
        try:
            message = json_format.ParseDict(
                request, spec.request_type(), ignore_unknown_fields=True
            )
        except json_format.ParseError as err:
            # The pipeline file mapped a value of the wrong shape: a configuration error.
            raise InvalidArgument(f"{capability}: the mapped request does not fit: {err}") from err
        multicallable = self._channel.unary_unary(
            spec.method,
            request_serializer=type(message).SerializeToString,
            response_deserializer=spec.response_type.FromString,
        )
        call = multicallable(message, timeout=timeout)
        try:
            response = await call
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        module = metadata_value(await call.initial_metadata(), MODULE_KEY) or metadata_value(
            await call.trailing_metadata(), MODULE_KEY
        )
        as_dict = json_format.MessageToDict(response, preserving_proto_field_name=True)
        return as_dict, module or ""


class HealthView:
    """The router's own health service, read as a client."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._check = channel.unary_unary(
            _CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._watch = channel.unary_stream(
            _WATCH,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    async def serving(self, service: str) -> bool:
        try:
            reply = await self._check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == SERVING)

    async def wait_serving(self, service: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Whether `service` becomes SERVING within `timeout` seconds."""
        if await self.serving(service):
            return True
        if timeout <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for serving in self.watch(service):
                    if serving:
                        return True
        return False

    async def reported(self, service: str) -> AsyncIterator[bool]:
        """Only what the health service itself reports for `service` over Watch (no Check
        fallback: a failed call says nothing about the status); reconnects after errors."""
        while True:
            call = self._watch(health_pb2.HealthCheckRequest(service=service))
            try:
                async for reply in call:
                    yield bool(reply.status == SERVING)
            except grpc.aio.AioRpcError:
                pass
            finally:
                call.cancel()
            await asyncio.sleep(0.5)

    async def watch(self, service: str, poll_s: float = 1.0) -> AsyncIterator[bool]:
        """Yields True/False on every health change of `service`, forever.

        Uses Watch; falls back to Check polling when the stream fails (e.g. the router is
        shutting down, or Watch is unimplemented), so callers never see an error.
        """
        while True:
            call = self._watch(health_pb2.HealthCheckRequest(service=service))
            try:
                async for reply in call:
                    yield bool(reply.status == SERVING)
            except grpc.aio.AioRpcError as err:
                _log.debug("health watch of %s ended: %s", service, err.code().name)
            finally:
                call.cancel()
            yield await self.serving(service)
            await asyncio.sleep(poll_s)


def is_unavailable(err: MeshError) -> bool:
    """No module could serve the call now (none healthy, or every candidate failed)."""
    return err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED)
