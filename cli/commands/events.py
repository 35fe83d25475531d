"""`soulspot events list`, `soulspot events tail` and `soulspot events consumers list|delete`:
the router's event log and its durable consumers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.console import console, err_console
from cli.documents import consumer_document, event_document
from cli.output import (
    JsonOption,
    OutputFormat,
    OutputOption,
    WideOption,
    output_format,
    print_result,
)
from cli.router_connection import RouterOption, run_on_router, show_from_router
from cli.tables import consumers_table, events_table, local_time, payload_summary
from soulspot.router.v1 import event_bus_pb2, event_bus_pb2_grpc, router_pb2, status_pb2_grpc

if TYPE_CHECKING:
    import grpc
    from rich.console import RenderableType

events_app = typer.Typer(no_args_is_help=True, help="Inspect and follow the event log.")
consumers_app = typer.Typer(no_args_is_help=True, help="Manage the bus's durable consumers.")
events_app.add_typer(consumers_app, name="consumers")

TypeOption = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="Event type pattern, e.g. download.* (repeatable)."),
]
# How often `tail` asks for events after the last one it printed.
TAIL_POLL_S = 0.5


@events_app.command("list")
def list_events(
    event_type: TypeOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many events.")] = 20,
    oldest_first: Annotated[bool, typer.Option("--oldest-first")] = False,
    correlation_id: Annotated[str, typer.Option("--correlation-id")] = "",
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """Stored events, newest first."""
    fmt = output_format(output, json_output=json_output, wide=wide)

    async def fetch(channel: grpc.aio.Channel) -> tuple[dict[str, Any], list[RenderableType]]:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        reply = await stub.ListEvents(
            router_pb2.ListEventsRequest(
                event_types=event_type or [],
                limit=limit,
                oldest_first=oldest_first,
                correlation_id=correlation_id,
            ),
            timeout=10,
        )
        events = list(reply.events)
        document = {"events": [event_document(env) for env in events]}
        return document, [events_table(events, f"events ({len(events)})")]

    show_from_router(router, fmt, fetch)


@events_app.command("tail")
def tail(
    event_type: TypeOption = None,
    router: RouterOption = None,
) -> None:
    """Follow new events as they are stored (Ctrl-C stops). Leaves no consumer behind."""

    async def body(channel: grpc.aio.Channel) -> int:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        newest = await stub.ListEvents(router_pb2.ListEventsRequest(limit=1), timeout=10)
        after = newest.events[0].sequence if newest.events else 0
        console.print(f"[dim]following events after #{after}; Ctrl-C stops[/]")
        while True:
            request = router_pb2.ReplayEventsRequest(
                from_sequence=after + 1, event_types=event_type or []
            )
            async for item in stub.ReplayEvents(request, timeout=30):
                env = item.event
                after = max(after, env.sequence)
                console.print(
                    f"[dim]{env.sequence:>6} {local_time(env.stored_at)}[/]"
                    f" [cyan]{env.event_type}[/] {env.source_module} {env.subject}"
                    f" {payload_summary(env, 120)}"
                )
            await asyncio.sleep(TAIL_POLL_S)

    run_on_router(router, body)


@consumers_app.command("list")
def list_consumers(
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """The bus's durable consumers: their event types, position, lag and subscribers."""
    fmt = output_format(output, json_output=json_output, wide=wide)

    async def fetch(channel: grpc.aio.Channel) -> tuple[dict[str, Any], list[RenderableType]]:
        reply = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            router_pb2.GetStatusRequest(), timeout=10
        )
        consumers = list(reply.consumers)
        return {"consumers": [consumer_document(c) for c in consumers]}, [
            consumers_table(consumers)
        ]

    show_from_router(router, fmt, fetch)


@consumers_app.command("delete")
def delete_consumer(
    name: Annotated[str, typer.Argument(help="The durable consumer's name.")],
    json_output: JsonOption = False,
    router: RouterOption = None,
) -> None:
    """Remove a durable consumer and its position (its dead letters stay); an admin operation."""
    fmt = output_format(json_output=json_output)

    async def body(channel: grpc.aio.Channel) -> int:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        reply = await stub.DeleteConsumer(
            event_bus_pb2.DeleteConsumerRequest(consumer=name), timeout=10
        )
        if fmt is OutputFormat.JSON:
            print_result(fmt, {"consumer": name, "deleted": reply.deleted}, [])
        elif reply.deleted:
            console.print(f"consumer {name!r} deleted")
        else:
            err_console.print(f"no consumer named {name!r}")
        return 0 if reply.deleted else 1

    run_on_router(router, body)
