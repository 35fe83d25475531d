"""`soulspot status`: the router's GetStatus as tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from services.kit.rpc.channel import open_channel
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2, status_pb2_grpc

if TYPE_CHECKING:
    from google.protobuf import timestamp_pb2

console = Console()
_STATUS_STYLE = {"active": "green", "degraded": "yellow", "inactive": "red", "unknown": "dim"}


def _status_name(value: int) -> str:
    name = module_pb2.ModuleStatus.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("MODULE_STATUS_").lower()


def _styled(value: int) -> str:
    name = _status_name(value)
    return f"[{_STATUS_STYLE.get(name, 'white')}]{name}[/]"


def _since(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def status(
    router: Annotated[
        str,
        typer.Option("--router", envvar="SOULSPOT_ROUTER_ADDRESS", help="The router's address."),
    ] = "127.0.0.1:50051",
) -> None:
    """Modules, capabilities with their providers, warnings and work in flight."""
    raise typer.Exit(asyncio.run(_status(router)))


async def _status(router: str) -> int:
    async with open_channel(router) as channel:
        try:
            reply = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                router_pb2.GetStatusRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as err:
            console.print(
                f"[red]router {router} unreachable:[/] {err.details() or err.code().name}"
            )
            return 1
    render(reply)
    return 0


def render(reply: router_pb2.GetStatusResponse) -> None:
    modules = Table(title="Modules")
    for column in ("module", "status", "reason", "address", "breaker", "since", "version"):
        modules.add_column(column)
    for m in reply.modules:
        modules.add_row(
            m.name,
            _styled(m.status),
            m.reason,
            m.address,
            m.breaker,
            _since(m.since),
            m.version,
        )
    console.print(modules)

    capabilities = Table(title="Capabilities")
    for column in ("capability", "available", "providers (in routing order)"):
        capabilities.add_column(column)
    for c in reply.capabilities:
        providers = ", ".join(
            f"{p.module} ({p.priority}, {_status_name(p.status)}"
            + ("" if p.routable else ", not routable")
            + ")"
            for p in c.providers
        )
        capabilities.add_row(
            c.name, "[green]yes[/]" if c.available else "[red]no[/]", providers or "-"
        )
    console.print(capabilities)

    if reply.warnings:
        warnings = Table(title="Warnings")
        for column in ("module", "operation", "status", "impact", "action"):
            warnings.add_column(column)
        for w in reply.warnings:
            warnings.add_row(w.module, w.operation, w.status, w.impact, w.action)
        console.print(warnings)

    if reply.in_flight:
        work = Table(title="In flight")
        for column in ("kind", "id", "what", "started", "progress"):
            work.add_column(column)
        for item in reply.in_flight:
            work.add_row(
                item.kind,
                item.id[:12],
                item.description,
                _since(item.started_at),
                f"{item.percent:.0f}%" if item.percent else "",
            )
        console.print(work)

    if reply.consumers:
        consumers = Table(title="Event consumers")
        for column in ("consumer", "events", "acked", "lag", "subscribers", "in flight"):
            consumers.add_column(column)
        for consumer in reply.consumers:
            consumers.add_row(
                consumer.name,
                ", ".join(consumer.event_types),
                str(consumer.acked_sequence),
                str(consumer.lag),
                str(consumer.subscribers),
                str(consumer.in_flight),
            )
        console.print(consumers)
    started = _since(reply.started_at)
    console.print(
        f"log at sequence {reply.last_sequence}, {reply.dead_letters} dead letters"
        + (f", router up since {started}" if started else "")
        + f" (as of {datetime.now().astimezone():%H:%M:%S})"
    )
