"""`soulspot status` with several routers: the consumers table names the router serving each
consumer when routers share them, and leaves the column out for a lone router."""

from __future__ import annotations

import io

from rich.console import Console

from cli.documents import status_document
from cli.output import OutputFormat, print_result
from cli.tables import consumers_table
from soulspot.router.v1 import router_pb2


def _render(consumers: list[router_pb2.ConsumerInfo]) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, legacy_windows=False)
    print_result(OutputFormat.TABLE, {}, [consumers_table(consumers)], console=console)
    return out.getvalue()


def test_shared_consumers_show_the_router_serving_each() -> None:
    text = _render(
        [router_pb2.ConsumerInfo(name="pipeline", served_by="router host-1-abc at r-a:50051")]
    )
    assert "served by" in text
    assert "router host-1-abc at r-a:50051" in text


def test_a_lone_routers_consumers_have_no_served_by_column() -> None:
    assert "served by" not in _render([router_pb2.ConsumerInfo(name="pipeline")])


def test_status_document_names_the_answering_router_and_each_consumers_server() -> None:
    reply = router_pb2.GetStatusResponse(answered_by="router-b:50051")
    reply.consumers.add(name="pipeline", served_by="router host-1-abc")
    document = status_document(reply)
    assert document["answered_by"] == "router-b:50051"
    assert document["consumers"][0]["served_by"] == "router host-1-abc"
