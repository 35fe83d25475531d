"""Who may read the routes over xDS: any verified mesh identity by default, named by its
certificate whatever node id it writes; the policy's discovery kinds can narrow that; the
setting turns the control plane off."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from router.security.policy import DEFAULT_POLICY_FILE
from router.xds.resources import LISTENER_TYPE
from services.kit.security.identity import CLI
from soulspot.router.v1 import router_pb2, status_pb2_grpc
from tests.helpers.router import router_app
from tests.helpers.secure_mesh import LIBRARY, SecureMesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SEARCH = "soulspot.capabilities.v1.SearchService"


async def _subscribe(channel: grpc.aio.Channel, node_id: str) -> discovery_pb2.DiscoveryResponse:
    async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        yield discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id=node_id), type_url=LISTENER_TYPE, resource_names=[SEARCH]
        )
        await asyncio.sleep(3600)

    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
        requests()
    )
    response = await asyncio.wait_for(call.read(), 5)
    assert isinstance(response, discovery_pb2.DiscoveryResponse)
    return response


async def test_the_node_id_is_the_verified_identity(tmp_path: Path) -> None:
    mesh = SecureMesh(tmp_path, xds={"warmup_s": 0})
    await mesh.start()
    try:
        response = await _subscribe(mesh.channel(LIBRARY), node_id="spiffe://soulspot/module/x")
        assert len(response.resources) == 1
        status = await status_pb2_grpc.StatusServiceStub(mesh.channel(CLI)).GetStatus(
            router_pb2.GetStatusRequest()
        )
        (client,) = status.xds_clients
        assert client.node_id == LIBRARY.uri
        assert client.identity == LIBRARY.uri
    finally:
        await mesh.stop()


async def test_the_policy_can_keep_modules_from_reading_routes(tmp_path: Path) -> None:
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text())
    policy["discovery"] = ["client"]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    mesh = SecureMesh(tmp_path, xds={"warmup_s": 0}, policy_file=str(policy_file))
    await mesh.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _subscribe(mesh.channel(LIBRARY), node_id="")
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert LIBRARY.uri in (caught.value.details() or "")
        assert len((await _subscribe(mesh.channel(CLI), node_id="")).resources) == 1
    finally:
        await mesh.stop()


async def test_the_control_plane_can_be_turned_off() -> None:
    app = router_app(xds={"enabled": False})
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _subscribe(channel, node_id="")
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await app.stop(0)
