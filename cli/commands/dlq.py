"""`soulspot dlq list | show | replay`: the router's dead letters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from google.protobuf import json_format

from cli.console import console, err_console
from cli.documents import dead_letter_document
from cli.output import (
    JsonOption,
    OutputFormat,
    OutputOption,
    WideOption,
    output_format,
    print_result,
)
from cli.router_connection import RouterOption, run_on_router, show_from_router
from cli.tables import dead_letter_table, dead_letters_table
from services.kit.events.client import unpack_payload
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2

if TYPE_CHECKING:
    import grpc
    from rich.console import RenderableType

dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay dead letters.")


@dlq_app.command("list")
def dlq_list(
    consumer: Annotated[str, typer.Option("--consumer", "-c", help="Only this consumer's.")] = "",
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """Dead letters, newest first."""
    fmt = output_format(output, json_output=json_output, wide=wide)

    async def fetch(channel: grpc.aio.Channel) -> tuple[dict[str, Any], list[RenderableType]]:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        reply = await stub.ListDeadLetters(
            router_pb2.ListDeadLettersRequest(consumer=consumer, limit=limit), timeout=10
        )
        letters = list(reply.dead_letters)
        document = {"dead_letters": [dead_letter_document(dl) for dl in letters]}
        return document, [dead_letters_table(letters)]

    show_from_router(router, fmt, fetch)


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: Annotated[int, typer.Argument(help="The dead letter's id.")],
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """One dead letter: why it is there, its envelope and payload."""
    fmt = output_format(output, json_output=json_output, wide=wide)

    async def body(channel: grpc.aio.Channel) -> int:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        reply = await stub.GetDeadLetter(
            router_pb2.GetDeadLetterRequest(dead_letter_id=dead_letter_id), timeout=10
        )
        document = {"dead_letter": dead_letter_document(reply.dead_letter)}
        print_result(fmt, document, [dead_letter_table(reply.dead_letter)])
        if fmt is OutputFormat.JSON:
            return 0  # the document holds the payload already
        env = reply.dead_letter.event
        try:
            console.print_json(json_format.MessageToJson(unpack_payload(env)))
        except Exception:
            console.print(f"[yellow]payload {env.payload.type_url} could not be decoded[/]")
        return 0

    run_on_router(router, body)


@dlq_app.command("replay")
def dlq_replay(
    dead_letter_ids: Annotated[
        list[int] | None, typer.Argument(help="Dead letter ids (or use --consumer).")
    ] = None,
    consumer: Annotated[
        str, typer.Option("--consumer", "-c", help="Replay every dead letter of this consumer.")
    ] = "",
    json_output: JsonOption = False,
    router: RouterOption = None,
) -> None:
    """Deliver dead letters to their consumer again."""
    fmt = output_format(json_output=json_output)
    if not dead_letter_ids and not consumer:
        err_console.print("[red]name dead letter ids or --consumer[/]")
        raise typer.Exit(2)

    async def body(channel: grpc.aio.Channel) -> int:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        reply = await stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(
                dead_letter_ids=dead_letter_ids or [], consumer=consumer
            ),
            timeout=10,
        )
        if fmt is OutputFormat.JSON:
            print_result(fmt, {"replayed": reply.replayed}, [])
        else:
            console.print(f"replayed {reply.replayed} dead letter(s)")
        return 0

    run_on_router(router, body)
