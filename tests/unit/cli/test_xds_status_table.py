"""`soulspot status` shows the router's xDS clients: node, per type ACKed/sent, last NACK."""

from __future__ import annotations

from cli.documents import status_document
from cli.tables import status_tables
from soulspot.router.v1 import router_pb2


def _reply() -> router_pb2.GetStatusResponse:
    return router_pb2.GetStatusResponse(
        xds_clients=[
            router_pb2.XdsClient(
                node_id="spiffe://soulspot/client/cli",
                identity="spiffe://soulspot/client/cli",
                peer="ipv4:127.0.0.1:40000",
                subscriptions=[
                    router_pb2.XdsSubscription(
                        type="listeners",
                        resource_names=["*"],
                        sent_version="4",
                        acked_version="3",
                        last_nack="bad listener",
                    ),
                    router_pb2.XdsSubscription(type="endpoints", sent_version="2"),
                ],
            )
        ]
    )


def test_status_has_an_xds_clients_table_only_when_there_are_clients() -> None:
    assert "xDS clients" not in [t.title for t in status_tables(router_pb2.GetStatusResponse())]
    (table,) = [t for t in status_tables(_reply()) if t.title == "xDS clients"]
    (row,) = table.rows
    cells = [cell.plain for cell in row]
    assert cells[0] == "spiffe://soulspot/client/cli"
    assert "listeners 3/4" in cells[3]
    assert "endpoints -/2" in cells[3]
    assert cells[4] == "listeners: bad listener"


def test_status_json_carries_the_xds_clients() -> None:
    (client,) = status_document(_reply())["xds_clients"]
    assert client["node_id"] == "spiffe://soulspot/client/cli"
    assert client["subscriptions"][0]["last_nack"] == "bad listener"
