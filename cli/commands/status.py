"""`soulspot status`: the router's GetStatus as tables."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text

from cli.documents import status_document
from cli.output import (
    JsonOption,
    OutputFormat,
    OutputOption,
    WideOption,
    output_format,
)
from cli.router_connection import RouterOption, show_from_router
from cli.spotify_login_state import login_document, login_line, stored_login
from cli.tables import local_time, status_tables
from soulspot.router.v1 import router_pb2, status_pb2_grpc

if TYPE_CHECKING:
    import grpc
    from rich.console import RenderableType


def status(
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """Modules, capabilities with their providers, warnings and work in flight, and whether a
    Spotify login is stored here."""
    fmt = output_format(output, json_output=json_output, wide=wide)
    login = stored_login()

    async def fetch(channel: grpc.aio.Channel) -> tuple[dict[str, Any], list[RenderableType]]:
        reply = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            router_pb2.GetStatusRequest(), timeout=10
        )
        started = local_time(reply.started_at)
        # Which router answered: with several, each shows the same mesh but its own uptime.
        answered = f"router {reply.answered_by}" if reply.answered_by else "router"
        summary = Text(
            f"log at sequence {reply.last_sequence}, {reply.dead_letters} dead letters"
            + (f", {answered} up since {started}" if started else "")
            + f" (as of {datetime.now().astimezone():%H:%M:%S})"
        )
        document = {**status_document(reply), "spotify_login": login_document(login)}
        return document, [*status_tables(reply), summary, Text(login_line(login))]

    show_from_router(router, fmt, fetch)
