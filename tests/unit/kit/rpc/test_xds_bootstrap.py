"""The xDS bootstrap names every router of the address setting as an xDS server, in order."""

from __future__ import annotations

import json

import pytest

from services.kit.rpc.xds_bootstrap import bootstrap_config, bootstrap_json


def test_one_router_is_the_one_xds_server() -> None:
    config = bootstrap_config("127.0.0.1:50051", node_id="spiffe://soulspot/client/cli", files=None)
    assert [s["server_uri"] for s in config["xds_servers"]] == ["127.0.0.1:50051"]
    assert config["xds_servers"][0]["channel_creds"] == [{"type": "insecure"}]


def test_several_routers_are_one_xds_server_each_in_the_order_given() -> None:
    text = bootstrap_json(
        "router:50051, router-b:50051,[::1]:50053", node_id="spiffe://x/y/z", files=None
    )
    servers = json.loads(text)["xds_servers"]
    assert [s["server_uri"] for s in servers] == ["router:50051", "router-b:50051", "[::1]:50053"]
    assert all(s["server_features"] == ["xds_v3"] for s in servers)


def test_an_address_setting_naming_no_router_is_refused() -> None:
    with pytest.raises(ValueError, match="no router"):
        bootstrap_config(" , ", node_id="spiffe://x/y/z", files=None)
