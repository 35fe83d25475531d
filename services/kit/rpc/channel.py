"""Client channels with the kit's interceptors and options that match KitServer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2

from services.kit.rpc.interceptors import client_interceptors
from services.kit.rpc.targets import ChannelTarget, channel_target
from services.kit.rpc.xds_bootstrap import xds_channel_credentials, xds_channel_options, xds_target
from services.kit.security.tls import Transport, current_transport

if TYPE_CHECKING:
    from collections.abc import Sequence

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Keepalive pings stay above the server's minimum ping interval (see SERVER_OPTIONS), or
# the server answers them with GOAWAY "too_many_pings".
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A restarted module is back within seconds; gRPC's default backoff grows to 120 s.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
)


def open_channel(
    address: str | ChannelTarget,
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    options: Sequence[tuple[str, int | str]] = (),
    transport: Transport | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel: mutual TLS as this process's identity, or plaintext when the
    process runs without TLS.

    `address` may name several servers, comma-separated (several routers): the channel then
    spreads calls over those that are up (services/kit/rpc/targets.py). Their names are
    looked up here, in this thread; code on an event loop passes the ChannelTarget from
    `await resolve_channel_target(address)` instead. `interceptors` defaults to the kit's
    context interceptors; `options` extend or override CHANNEL_OPTIONS; `transport` defaults
    to the process's (`use_transport`).
    """
    target = address if isinstance(address, ChannelTarget) else channel_target(address)
    address = target.target
    merged: dict[str, int | str] = dict(CHANNEL_OPTIONS)
    merged.update(target.options)
    merged.update(options)
    chosen = transport or current_transport()
    credentials = chosen.channel_credentials() if chosen is not None else None
    wrapped = list(client_interceptors() if interceptors is None else interceptors)
    if credentials is None:
        return grpc.aio.insecure_channel(
            address, options=list(merged.items()), interceptors=wrapped
        )
    return grpc.aio.secure_channel(
        address, credentials, options=list(merged.items()), interceptors=wrapped
    )


def open_xds_channel(
    service: str,
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    options: Sequence[tuple[str, int | str]] = (),
    transport: Transport | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `xds:///<service>`: gRPC's xDS client takes the service's routes
    and endpoints from the control plane named in the process's bootstrap and calls modules
    directly. Mutual TLS as this process's identity, as in `open_channel`.

    The bootstrap must be in place before the first such channel of the process connects
    (`services.kit.rpc.capability_channels` installs it).
    """
    chosen = transport or current_transport()
    merged: dict[str, int | str] = dict(CHANNEL_OPTIONS)
    # The listener name is the authority, and no certificate carries it: TLS checks the name
    # every mesh certificate does carry (the chain is still verified against the mesh CA).
    merged.update(xds_channel_options(chosen))
    merged.update(options)
    wrapped = list(client_interceptors() if interceptors is None else interceptors)
    return grpc.aio.secure_channel(
        xds_target(service),
        xds_channel_credentials(chosen),
        options=list(merged.items()),
        interceptors=wrapped,
    )


async def check_health(
    channel: grpc.aio.Channel,
    service: str = "",
    *,
    timeout: float = 1.0,  # noqa: ASYNC109 (the per-RPC gRPC deadline, not a wait)
    wait: bool = False,
) -> bool:
    """Whether the service answers SERVING to grpc.health.v1 Check (False on any RPC error).

    `wait`: let the call wait (up to `timeout`) for a connection instead of failing fast.
    """
    # A raw multicallable: the health stub's published type stubs have no methods.
    check = channel.unary_unary(
        HEALTH_CHECK_METHOD,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        reply = await check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=wait
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def wait_for_ready(
    address: str,
    timeout: float,  # noqa: ASYNC109 (named like grpc's own; bounds the whole wait)
    *,
    service: str = "",
    transport: Transport | None = None,
) -> None:
    """Wait until the server at `address` reports `service` SERVING.

    Raises TimeoutError when it does not within `timeout` seconds. `transport` defaults to the
    process's, as in `open_channel`.
    """
    async with open_channel(address, interceptors=(), transport=transport) as channel:
        async with asyncio.timeout(timeout):
            while True:
                if await check_health(channel, service, timeout=min(1.0, timeout), wait=True):
                    return
                await asyncio.sleep(0.05)
