"""`soulspot events` and `soulspot dlq`: the router's event log and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC
from typing import TYPE_CHECKING, Annotated

import grpc
import typer
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from services.kit.events.client import unpack_payload
from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import from_rpc_error
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from google.protobuf import timestamp_pb2

    from soulspot.events.v1 import envelope_pb2

Body = "Callable[[event_bus_pb2_grpc.EventBusServiceAsyncStub], Awaitable[int]]"
console = Console()
events_app = typer.Typer(no_args_is_help=True, help="Inspect and follow the event log.")
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay dead letters.")

RouterOption = Annotated[
    str,
    typer.Option("--router", envvar="SOULSPOT_ROUTER_ADDRESS", help="The router's address."),
]
TypeOption = Annotated[
    list[str] | None,
    typer.Option("--type", "-t", help="Event type pattern, e.g. download.* (repeatable)."),
]
DEFAULT_ROUTER = "127.0.0.1:50051"
TAIL_POLL_S = 0.5


def _time(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _summary(env: envelope_pb2.EventEnvelope, width: int = 80) -> str:
    """The payload as compact JSON, cut to fit a table cell."""
    try:
        payload = unpack_payload(env)
    except Exception:
        return f"<{env.payload.type_url}>"
    text = json.dumps(json_format.MessageToDict(payload), separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _run(
    router: str, body: Callable[[event_bus_pb2_grpc.EventBusServiceAsyncStub], Awaitable[int]]
) -> None:
    async def main() -> int:
        async with open_channel(router) as channel:
            try:
                return await body(event_bus_pb2_grpc.EventBusServiceStub(channel))
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    console.print(f"[red]router {router} unreachable:[/] {error.message}")
                else:
                    console.print(f"[red]{err.code().name}:[/] {error.message}")
                return 1

    with contextlib.suppress(KeyboardInterrupt):
        raise typer.Exit(asyncio.run(main()))


def _events_table(events: list[envelope_pb2.EventEnvelope], title: str) -> Table:
    table = Table(title=title)
    table.add_column("seq", justify="right")
    table.add_column("stored at")
    table.add_column("type", style="cyan")
    table.add_column("source")
    table.add_column("subject")
    table.add_column("correlation")
    table.add_column("payload", overflow="fold")
    for env in events:
        table.add_row(
            str(env.sequence),
            _time(env.stored_at),
            env.event_type,
            env.source_module,
            env.subject,
            env.correlation_id[:12],
            _summary(env),
        )
    return table


@events_app.command("list")
def list_events(
    event_type: TypeOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many events.")] = 20,
    oldest_first: Annotated[bool, typer.Option("--oldest-first")] = False,
    correlation_id: Annotated[str, typer.Option("--correlation-id")] = "",
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Stored events, newest first."""

    async def body(stub: event_bus_pb2_grpc.EventBusServiceAsyncStub) -> int:
        reply = await stub.ListEvents(
            router_pb2.ListEventsRequest(
                event_types=event_type or [],
                limit=limit,
                oldest_first=oldest_first,
                correlation_id=correlation_id,
            ),
            timeout=10,
        )
        console.print(_events_table(list(reply.events), f"events ({len(reply.events)})"))
        return 0

    _run(router, body)


@events_app.command("tail")
def tail(
    event_type: TypeOption = None,
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Follow new events as they are stored (Ctrl-C stops). Leaves no consumer behind."""

    async def body(stub: event_bus_pb2_grpc.EventBusServiceAsyncStub) -> int:
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
                    f"[dim]{env.sequence:>6} {_time(env.stored_at)}[/] [cyan]{env.event_type}[/]"
                    f" {env.source_module} {env.subject} {_summary(env, 120)}"
                )
            await asyncio.sleep(TAIL_POLL_S)

    _run(router, body)


_REASONS = {
    router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS: "max attempts",
    router_pb2.DEAD_LETTER_REASON_CYCLE: "cycle",
    router_pb2.DEAD_LETTER_REASON_DEPTH: "depth",
}


@dlq_app.command("list")
def dlq_list(
    consumer: Annotated[str, typer.Option("--consumer", "-c", help="Only this consumer's.")] = "",
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Dead letters, newest first."""

    async def body(stub: event_bus_pb2_grpc.EventBusServiceAsyncStub) -> int:
        reply = await stub.ListDeadLetters(
            router_pb2.ListDeadLettersRequest(consumer=consumer, limit=limit), timeout=10
        )
        table = Table(title=f"dead letters ({len(reply.dead_letters)})")
        for column in ("id", "parked at", "consumer", "reason", "attempts", "type", "seq", "error"):
            table.add_column(column, overflow="fold")
        for dl in reply.dead_letters:
            table.add_row(
                str(dl.dead_letter_id),
                _time(dl.parked_at),
                dl.consumer or "[dim](cycle guard)[/]",
                _REASONS.get(dl.reason, "?"),
                str(dl.attempts),
                dl.event.event_type,
                str(dl.event.sequence),
                dl.last_error,
            )
        console.print(table)
        return 0

    _run(router, body)


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: Annotated[int, typer.Argument(help="The dead letter's id.")],
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """One dead letter: why it is there, its envelope and payload."""

    async def body(stub: event_bus_pb2_grpc.EventBusServiceAsyncStub) -> int:
        reply = await stub.GetDeadLetter(
            router_pb2.GetDeadLetterRequest(dead_letter_id=dead_letter_id), timeout=10
        )
        dl = reply.dead_letter
        env = dl.event
        table = Table(show_header=False, title=f"dead letter {dl.dead_letter_id}")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        rows = [
            ("consumer", dl.consumer or "(cycle guard)"),
            ("reason", _REASONS.get(dl.reason, "?")),
            ("attempts", str(dl.attempts)),
            ("last error", dl.last_error),
            ("parked at", _time(dl.parked_at)),
            ("event id", env.event_id),
            ("type", f"{env.event_type} {env.schema_version}"),
            ("sequence", str(env.sequence)),
            ("source", env.source_module),
            ("correlation", env.correlation_id),
            (
                "causation",
                " -> ".join(f"{h.event_type}@{h.source_module}" for h in env.causation_chain),
            ),
        ]
        for key, value in rows:
            table.add_row(key, value)
        console.print(table)
        try:
            console.print_json(json_format.MessageToJson(unpack_payload(env)))
        except Exception:
            console.print(f"[yellow]payload {env.payload.type_url} could not be decoded[/]")
        return 0

    _run(router, body)


@dlq_app.command("replay")
def dlq_replay(
    dead_letter_ids: Annotated[
        list[int] | None, typer.Argument(help="Dead letter ids (or use --consumer).")
    ] = None,
    consumer: Annotated[
        str, typer.Option("--consumer", "-c", help="Replay every dead letter of this consumer.")
    ] = "",
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Deliver dead letters to their consumer again."""
    if not dead_letter_ids and not consumer:
        console.print("[red]name dead letter ids or --consumer[/]")
        raise typer.Exit(2)

    async def body(stub: event_bus_pb2_grpc.EventBusServiceAsyncStub) -> int:
        reply = await stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(
                dead_letter_ids=dead_letter_ids or [], consumer=consumer
            ),
            timeout=10,
        )
        console.print(f"replayed {reply.replayed} dead letter(s)")
        return 0

    _run(router, body)
