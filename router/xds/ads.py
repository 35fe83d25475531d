"""The ADS servicer (`envoy.service.discovery.v3.AggregatedDiscoveryService`): state of the
world over one stream per client, versions and nonces per resource type, ACK and NACK.

Per type a client subscribes to resource names (listeners and clusters also as a wildcard);
the router sends only what was subscribed, all of it in every response (state of the world),
whenever the subscription or the type's version changes. A request that answers an older
nonce is stale and ignored. A NACK (a request with `error_detail`) keeps the client on the
version it ACKed last and is logged once per type, version and error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from router.security.quotas import StreamQuota, quota_key
from router.xds.control_plane import TYPES
from router.xds.resources import CLUSTER_TYPE, LISTENER_TYPE, TYPE_NAMES
from services.kit.rpc.capability_channels import ADS_SERVICE
from services.kit.rpc.errors import InvalidArgument, bad_request

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    import grpc

    from router.security.caller import Callers
    from router.xds.control_plane import ControlPlane
    from services.kit.security.identity import Identity

log = logging.getLogger("soulspot.router.xds")

# The name the kit's capability channels ask the router's health service about.
SERVICE_NAME = ADS_SERVICE
_WILDCARD = "*"
# Types where an empty first subscription means "everything" (the legacy wildcard).
_WILDCARD_TYPES = (LISTENER_TYPE, CLUSTER_TYPE)
# NACKs already logged: (type, version, error); bounded, a client in a NACK loop repeats one.
_MAX_LOGGED_NACKS = 1024


@dataclass(slots=True)
class TypeState:
    """One resource type on one stream."""

    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    nonce: str = ""
    sent_version: str = ""
    acked_version: str = ""
    last_nack: str = ""
    pending: bool = True


@dataclass(eq=False)
class AdsClient:
    """One ADS stream: who it is and what it subscribed to, ACKed and NACKed."""

    node_id: str
    identity: Identity | None
    peer: str
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    error: Exception | None = None
    closed: bool = False
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_nonce(self) -> str:
        return str(next(self._nonces))


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves the control plane's snapshot to every subscribed client."""

    def __init__(
        self, plane: ControlPlane, callers: Callers, *, max_streams: int, max_names: int
    ) -> None:
        self.plane = plane
        self.callers = callers
        self.max_names = max_names
        self.quota = StreamQuota(
            max_streams,
            setting="SOULSPOT_ROUTER__XDS__MAX_STREAMS_PER_IDENTITY",
            what="open ADS streams",
        )
        self._logged_nacks: set[tuple[str, str, str]] = set()

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterable[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        caller = self.callers.identify(context)
        self.callers.check_discovery(caller)
        key = quota_key(context)
        self.quota.acquire(key)
        client = AdsClient(
            node_id=caller.uri if caller is not None else "",
            identity=caller,
            peer=context.peer() or "",
        )
        self.plane.attach(client)
        reader = asyncio.create_task(self._read(request_iterator, client))
        try:
            # Right after a restart the registry is still filling: answering now would take
            # every module away from clients that have them.
            await self.plane.wait_ready()
            while True:
                await client.wake.wait()
                client.wake.clear()
                if client.error is not None:
                    raise client.error
                if client.closed:
                    return
                for response in self.responses(client):
                    yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.plane.detach(client)
            self.quota.release(key)

    async def _read(
        self, requests: AsyncIterable[discovery_pb2.DiscoveryRequest], client: AdsClient
    ) -> None:
        try:
            async for request in requests:
                self.handle(client, request)
        except Exception as err:  # a bad request ends the stream with its status
            client.error = err
        finally:
            client.closed = True
            client.wake.set()

    # -- requests ---------------------------------------------------------------------------

    def handle(self, client: AdsClient, request: discovery_pb2.DiscoveryRequest) -> None:
        """Take one request: a subscription, an ACK or a NACK (or a stale one: ignored)."""
        type_url = request.type_url
        if type_url not in TYPES:
            raise InvalidArgument(
                f"unknown resource type {type_url!r}",
                details=[bad_request({"type_url": f"not one of {', '.join(TYPES)}"})],
            )
        if len(request.resource_names) > self.max_names:
            raise InvalidArgument(
                f"{len(request.resource_names)} resource names in one request; the limit is "
                f"SOULSPOT_ROUTER__XDS__MAX_RESOURCE_NAMES={self.max_names}",
                details=[
                    bad_request(
                        {
                            "resource_names": f"more than {self.max_names} names (the setting "
                            "SOULSPOT_ROUTER__XDS__MAX_RESOURCE_NAMES)"
                        }
                    )
                ],
            )
        if not client.node_id and request.HasField("node"):
            # Plaintext: the caller is taken at its word, as every other router call is.
            client.node_id = request.node.id
        first = type_url not in client.types
        state = client.types.setdefault(type_url, TypeState())
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                return  # answers a response that a newer one replaced
            if request.HasField("error_detail"):
                self._nack(client, type_url, state, request)
            else:
                state.acked_version = request.version_info
        names = set(request.resource_names)
        wildcard = type_url in _WILDCARD_TYPES and (
            _WILDCARD in names or (not names and (first or state.wildcard))
        )
        names.discard(_WILDCARD)
        if first or names != state.names or wildcard != state.wildcard:
            state.names, state.wildcard = names, wildcard
            state.pending = True
            client.wake.set()

    def _nack(
        self,
        client: AdsClient,
        type_url: str,
        state: TypeState,
        request: discovery_pb2.DiscoveryRequest,
    ) -> None:
        error = request.error_detail.message
        state.last_nack = error
        key = (type_url, state.sent_version, error)
        if key in self._logged_nacks:
            return
        if len(self._logged_nacks) >= _MAX_LOGGED_NACKS:
            self._logged_nacks.clear()
        self._logged_nacks.add(key)
        log.warning(
            "xDS client %s rejected %s version %s: %s",
            client.node_id,
            TYPE_NAMES[type_url],
            state.sent_version,
            error,
            extra={
                "operation": "xds",
                "status": "nack",
                "impact": f"the client keeps {TYPE_NAMES[type_url]} version "
                f"{state.acked_version or 'none'}",
                "action": "read the error: the router built a resource this client refuses",
            },
        )

    # -- responses --------------------------------------------------------------------------

    def responses(self, client: AdsClient) -> list[discovery_pb2.DiscoveryResponse]:
        """What the client must be sent now: per subscribed type whose subscription or
        version changed, every subscribed resource that exists."""
        out = []
        for type_url, state in client.types.items():
            version = str(self.plane.versions[type_url])
            if not state.pending and state.sent_version == version:
                continue
            available = self.plane.snapshot.of(type_url)
            chosen = (
                sorted(available)
                if state.wildcard
                else sorted(n for n in state.names if n in available)
            )
            state.nonce = client.next_nonce()
            state.sent_version = version
            state.pending = False
            out.append(
                discovery_pb2.DiscoveryResponse(
                    version_info=version,
                    resources=[available[n] for n in chosen],
                    type_url=type_url,
                    nonce=state.nonce,
                )
            )
        return out
