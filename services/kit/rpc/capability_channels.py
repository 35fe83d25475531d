"""Channels for calling capabilities: `xds:///<service>` straight to modules when the router
serves xDS, the router's capability proxy otherwise.

    channels = CapabilityChannels(router_channel, "127.0.0.1:50051", identity=me)
    await channels.start()
    stub = library_pb2_grpc.LibraryServiceStub(channels.for_service(LIBRARY_SERVICE))

`for_service` hands out one channel per capability service. With xDS, gRPC's xDS client
asks the router for that service's listener, routes, clusters and endpoints and then calls
the modules itself: priorities, health, retries of idempotent capabilities and named-module
routes (`x-soulspot-target-module`) come from the router's configuration, and calls keep
going to the last known modules while the router is away. Without xDS (the router does not
serve it, is not reachable yet, or the caller turned it off) every service gets the router's
channel and the router proxies each call.

Whether the router serves xDS is decided by its health service: the ADS service reported
SERVING. It is asked once at start; while the answer is no, it is asked again through the
kit's backoff, and the channels move to xDS once it is yes. They never move back: an xds
channel keeps its last configuration when the control plane goes, which is what lets calls
outlive a router restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Self

from services.kit.rpc.channel import check_health, open_xds_channel
from services.kit.rpc.xds_bootstrap import (
    BOOTSTRAP_CONFIG_ENV,
    BOOTSTRAP_FILE_ENV,
    bootstrap_json,
    xds_target,
)
from services.kit.security.tls import current_transport
from services.kit.support.backoff import Backoff, BackoffPolicy
from services.kit.support.tasks import cancel_and_wait

if TYPE_CHECKING:
    from types import TracebackType

    import grpc

    from services.kit.security.identity import Identity
    from services.kit.security.tls import Transport

__all__ = ["ADS_SERVICE", "CapabilityChannels", "install_bootstrap"]

log = logging.getLogger("soulspot.channels")

# The router reports this service SERVING in its health service while it serves xDS.
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# Asking again while the router serves no xDS: calls go through its proxy meanwhile, so
# there is no hurry, and a router that never will is asked about twice a minute.
RECHECK_BACKOFF = BackoffPolicy(initial_s=0.5, cap_s=30.0, jitter="equal")
# One health check: the router is local to the mesh and answers in milliseconds.
_CHECK_TIMEOUT_S = 1.0


def install_bootstrap(router_address: str, identity: Identity, transport: Transport | None) -> str:
    """Point this process's xDS client at the router, and return the bootstrap JSON. With
    several routers (a comma-separated `router_address`) each is an xDS server, the later
    ones the first's fallbacks, so the channels work while the first router is down.

    gRPC reads its bootstrap from the environment (and nowhere else) when the process's first
    xds channel connects, and shares that xDS client with every later one: so this is the
    one place in the mesh that writes those variables, before any xds channel exists. A
    bootstrap file named in GRPC_XDS_BOOTSTRAP would win over the JSON, so it goes: the
    kit's channels follow the router the process was configured with, nothing else.
    """
    text = bootstrap_json(
        router_address,
        node_id=identity.uri,
        files=transport.files if transport is not None else None,
    )
    os.environ.pop(BOOTSTRAP_FILE_ENV, None)
    os.environ[BOOTSTRAP_CONFIG_ENV] = text
    return text


class CapabilityChannels:
    """One channel per capability service: xDS when the router serves it, else the router.

    `router` is a channel to the router, owned by the caller (it stays open after `stop`);
    `router_address` is what the bootstrap names as the control plane; `identity` is this
    process (the node id); `transport` defaults to the process's. `xds=False` keeps every call
    on the router's proxy and never asks.
    """

    def __init__(
        self,
        router: grpc.aio.Channel,
        router_address: str,
        *,
        identity: Identity,
        transport: Transport | None = None,
        xds: bool = True,
        recheck: BackoffPolicy = RECHECK_BACKOFF,
    ) -> None:
        self._router = router
        self.router_address = router_address
        self.identity = identity
        self._transport = transport
        self.xds_enabled = xds
        self._recheck = recheck
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._task: asyncio.Task[None] | None = None
        # Set once the channels use xDS; it never clears.
        self._xds = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Ask the router once; when it serves no xDS, keep asking in the background."""
        if not self.xds_enabled or self._task is not None or self.uses_xds:
            return
        if await self._router_serves_xds():
            self._use_xds()
            return
        log.info(
            "capability calls go through the router's proxy until it serves xDS",
            extra={"operation": "capability_channels", "status": "proxy"},
        )
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- what callers use ---------------------------------------------------------------

    @property
    def uses_xds(self) -> bool:
        """Whether calls go straight to modules (xDS) rather than through the router."""
        return self._xds.is_set()

    def target(self, service: str) -> str:
        """Where a call to `service` goes now: `xds:///<service>`, or the router's address."""
        return xds_target(service) if self.uses_xds else self.router_address

    def for_service(self, service: str) -> grpc.aio.Channel:
        """The channel for calls to `service` (a full name such as
        `soulspot.capabilities.v1.DownloadService`). Ask again for each call or batch of
        calls, not once at start: the answer moves to xDS when the router starts serving it.
        """
        if not self.uses_xds:
            return self._router
        channel = self._channels.get(service)
        if channel is None:
            channel = self._channels[service] = open_xds_channel(
                service, transport=self._transport_now()
            )
        return channel

    async def wait_for_xds(self, timeout: float) -> bool:  # noqa: ASYNC109 (bounds the wait)
        """Whether the channels use xDS within `timeout` seconds (tests, tools)."""
        try:
            async with asyncio.timeout(timeout):
                await self._xds.wait()
        except TimeoutError:
            return False
        return True

    # -- deciding -------------------------------------------------------------------------

    def _transport_now(self) -> Transport | None:
        return self._transport or current_transport()

    async def _router_serves_xds(self) -> bool:
        return await check_health(self._router, ADS_SERVICE, timeout=_CHECK_TIMEOUT_S)

    def _use_xds(self) -> None:
        install_bootstrap(self.router_address, self.identity, self._transport_now())
        self._xds.set()
        log.info(
            "capability calls go straight to modules, routed by the router's xDS",
            extra={"operation": "capability_channels", "status": "xds"},
        )

    async def _watch(self) -> None:
        backoff = Backoff(self._recheck)
        while True:
            await backoff.wait()
            if await self._router_serves_xds():
                self._use_xds()
                self._task = None
                return
