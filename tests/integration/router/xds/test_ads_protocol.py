"""The router's ADS stream as a raw xDS client sees it: versions and nonces per type, ACK and
NACK, subscriptions, pushes after registry changes, bounds, and the status that shows it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2 as rpc_status_pb2

from router.xds.resources import CLUSTER_TYPE, ENDPOINTS_TYPE, LISTENER_TYPE
from soulspot.router.v1 import router_pb2, status_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from router.app import RouterApp
    from tests.helpers.fake_module import FakeModule

    Make = Callable[..., Awaitable[FakeModule]]

SEARCH = "soulspot.capabilities.v1.SearchService"


class Stream:
    """One ADS stream driven by hand."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self.call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            self._requests()
        )

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def send(self, type_url: str, names: list[str], **fields: object) -> None:
        await self.requests.put(
            discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names, **fields)
        )

    async def receive(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:  # noqa: ASYNC109
        response = await asyncio.wait_for(self.call.read(), timeout)
        assert isinstance(response, discovery_pb2.DiscoveryResponse)
        return response

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: list[str]) -> None:
        await self.send(
            response.type_url,
            names,
            version_info=response.version_info,
            response_nonce=response.nonce,
        )


@pytest.fixture
async def xds_channel(xds_router: RouterApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(xds_router.address) as channel:
        yield channel


async def _status(channel: grpc.aio.Channel) -> router_pb2.GetStatusResponse:
    stub = status_pb2_grpc.StatusServiceStub(channel)
    return await stub.GetStatus(router_pb2.GetStatusRequest())


async def test_a_subscription_gets_only_what_it_names_with_a_version_and_nonce(
    xds_channel: grpc.aio.Channel,
) -> None:
    stream = Stream(xds_channel)
    await stream.send(LISTENER_TYPE, [SEARCH, "no.such.Service"])
    response = await stream.receive()
    assert response.type_url == LISTENER_TYPE
    assert response.version_info
    assert response.nonce
    listeners = [listener_pb2.Listener.FromString(r.value) for r in response.resources]
    assert [listener.name for listener in listeners] == [SEARCH]
    stream.call.cancel()


async def test_listeners_and_clusters_may_be_asked_for_by_wildcard(
    xds_channel: grpc.aio.Channel, xds_router: RouterApp
) -> None:
    stream = Stream(xds_channel)
    await stream.send(CLUSTER_TYPE, [])
    response = await stream.receive()
    assert len(response.resources) == len(xds_router.catalog.by_capability) + 1
    await stream.send(ENDPOINTS_TYPE, [])
    # An empty endpoint subscription is nothing, not everything.
    assert len((await stream.receive()).resources) == 0
    stream.call.cancel()


async def test_a_registry_change_pushes_a_new_endpoints_version_and_an_ack_is_shown(
    xds_channel: grpc.aio.Channel, xds_module: Make
) -> None:
    stream = Stream(xds_channel)
    names = ["capability:search.track"]
    await stream.send(ENDPOINTS_TYPE, names)
    first = await stream.receive()
    assert not endpoint_pb2.ClusterLoadAssignment.FromString(first.resources[0].value).endpoints
    await stream.ack(first, names)
    fake = await xds_module("primary", 10)
    pushed = await stream.receive()
    # The module registers before its health is known: wait for the push that has it healthy.
    while True:
        assignment = endpoint_pb2.ClusterLoadAssignment.FromString(pushed.resources[0].value)
        endpoints = [e for group in assignment.endpoints for e in group.lb_endpoints]
        if endpoints and endpoints[0].health_status == 1:  # HEALTHY
            break
        await stream.ack(pushed, names)
        pushed = await stream.receive()
    assert int(pushed.version_info) > int(first.version_info)
    assert pushed.nonce != first.nonce
    port = endpoints[0].endpoint.address.socket_address.port_value
    assert fake.address.endswith(f":{port}")
    await stream.ack(pushed, names)

    async def acked() -> router_pb2.XdsSubscription | None:
        status = await _status(xds_channel)
        for client in status.xds_clients:
            for sub in client.subscriptions:
                if sub.type == "endpoints" and sub.acked_version == pushed.version_info:
                    return sub
        return None

    for _ in range(100):
        if (sub := await acked()) is not None:
            break
        await asyncio.sleep(0.02)
    assert sub is not None
    assert list(sub.resource_names) == names
    stream.call.cancel()


async def test_a_nack_is_shown_and_logged_once_and_a_stale_nonce_is_ignored(
    xds_channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "soulspot.router.xds")
    stream = Stream(xds_channel)
    await stream.send(LISTENER_TYPE, [SEARCH])
    response = await stream.receive()
    error = rpc_status_pb2.Status(code=3, message="listener refused by the test")
    for _ in range(3):
        await stream.send(
            LISTENER_TYPE,
            [SEARCH],
            response_nonce=response.nonce,
            error_detail=error,
        )
    # A request answering an older nonce changes nothing, even with new names.
    await stream.send(LISTENER_TYPE, [], response_nonce="stale")
    await stream.send(CLUSTER_TYPE, ["capability:search.track"])
    assert (await stream.receive()).type_url == CLUSTER_TYPE  # requests were all handled
    status = await _status(xds_channel)
    (client,) = status.xds_clients
    (listeners,) = [s for s in client.subscriptions if s.type == "listeners"]
    assert listeners.last_nack == "listener refused by the test"
    assert listeners.acked_version == ""
    assert list(listeners.resource_names) == [SEARCH]
    nacks = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(nacks) == 1
    stream.call.cancel()


async def test_too_many_names_in_one_request_is_invalid_argument(
    xds_channel: grpc.aio.Channel,
) -> None:
    stream = Stream(xds_channel)
    await stream.send(ENDPOINTS_TYPE, [f"cluster-{i}" for i in range(9)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.receive()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SOULSPOT_ROUTER__XDS__MAX_RESOURCE_NAMES" in (caught.value.details() or "")


async def test_streams_per_caller_are_bounded(xds_channel: grpc.aio.Channel) -> None:
    streams = [Stream(xds_channel) for _ in range(3)]
    for stream in streams:
        await stream.send(LISTENER_TYPE, [SEARCH])
        await stream.receive()
    extra = Stream(xds_channel)
    await extra.send(LISTENER_TYPE, [SEARCH])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await extra.receive()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "SOULSPOT_ROUTER__XDS__MAX_STREAMS_PER_IDENTITY" in (caught.value.details() or "")
    # A stream that ends gives its place back.
    streams[0].call.cancel()
    for _ in range(100):
        again = Stream(xds_channel)
        await again.send(LISTENER_TYPE, [SEARCH])
        try:
            await again.receive()
            break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.02)
    else:
        raise AssertionError("the ended stream's place was not given back")
    for stream in [*streams[1:], again]:
        stream.call.cancel()
