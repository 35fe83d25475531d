"""A tiny generic gRPC service for the observability tests: `/obs.Probe/Say` answers with
the request bytes, or fails with the status code the request names ("fail:NOT_FOUND")."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from services.kit.rpc.server import KitServer

SAY = "/obs.Probe/Say"
SERVICE = "obs.Probe"

log = logging.getLogger("obs.probe")


def _identity(data: bytes) -> bytes:
    return data


async def _say(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    text = request.decode()
    log.info("probe handling %s", text)
    if text.startswith("fail:"):
        await context.abort(grpc.StatusCode[text.removeprefix("fail:")], "asked to fail")
    if text == "crash":
        raise RuntimeError("probe crashed")
    return request


class ProbeHandler(grpc.GenericRpcHandler):
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method == SAY:
            return grpc.unary_unary_rpc_method_handler(
                _say, request_deserializer=_identity, response_serializer=_identity
            )
        return None


def add_probe(server: KitServer) -> None:
    server.add_service(lambda s: s.add_generic_rpc_handlers((ProbeHandler(),)), SERVICE)


def say(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(SAY, request_serializer=_identity, response_deserializer=_identity)
