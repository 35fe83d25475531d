"""`soulspot watch-playlist`: keep a playlist in sync on a schedule, run by the router.

    soulspot watch-playlist <playlist> --every 6h   # watch it (or change its interval)
    soulspot watch-playlist list                    # every watch: next run, last result
    soulspot watch-playlist run <playlist>          # run it now and print the result
    soulspot watch-playlist remove <playlist>       # stop watching it

The router keeps the schedule (in its state folder) and runs it whether or not this command
is still running; each run requests only the tracks the watch has not requested before.
Every subcommand takes `--json`: `list` prints {"watches": [...]}, the others {"watch": ...}
(`add` also "created"), each watch as cli/documents.py's `watch_document`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from google.protobuf import duration_pb2
from typer.core import TyperGroup

from cli.console import console, err_console
from cli.documents import watch_document
from cli.output import (
    JsonOption,
    OutputFormat,
    OutputOption,
    WideOption,
    output_format,
    print_result,
)
from cli.router_connection import RouterOption, run_on_router
from cli.tables import local_time, watched_playlists_table
from services.kit.support.intervals import format_interval, parse_interval
from soulspot.router.v1 import watches_pb2, watches_pb2_grpc

if TYPE_CHECKING:
    import grpc

CALL_TIMEOUT_S = 10.0


class _AddByDefault(TyperGroup):
    """`watch-playlist <playlist> --every 6h` means `watch-playlist add <playlist> ...`."""

    # ctx is typer's vendored click Context, which it does not export under a public name.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["add", *args]
        return super().parse_args(ctx, args)


watch_playlist_app = typer.Typer(
    cls=_AddByDefault,
    no_args_is_help=True,
    help="Keep a playlist in sync on a schedule: `watch-playlist <playlist> --every 6h`, "
    "`list`, `run <playlist>`, `remove <playlist>`.",
)


def _stub(channel: grpc.aio.Channel) -> Any:
    return watches_pb2_grpc.PlaylistWatchServiceStub(channel)


def _summary(watch: watches_pb2.PlaylistWatch) -> str:
    every = format_interval(watch.every.ToTimedelta().total_seconds())
    name = f" ({watch.name})" if watch.name else ""
    return f"playlist {watch.playlist_id}{name} every {every}"


@watch_playlist_app.command("add")
def watch_add(
    playlist: Annotated[str, typer.Argument(help="A playlist id or share URL.")],
    every: Annotated[
        str,
        typer.Option("--every", help="How often: 90m, 6h, 1d, 1h30m (from 5m to 30d)."),
    ] = "6h",
    json_output: JsonOption = False,
    router: RouterOption = None,
) -> None:
    """Watch a playlist (its first run starts at once), or change its interval."""
    fmt = output_format(json_output=json_output)
    try:
        seconds = parse_interval(every)
    except ValueError as err:
        err_console.print(f"[red]--every:[/] {err}")
        raise typer.Exit(2) from err

    async def body(channel: grpc.aio.Channel) -> int:
        reply = await _stub(channel).AddPlaylistWatch(
            watches_pb2.AddPlaylistWatchRequest(
                playlist_id=playlist,
                every=duration_pb2.Duration(seconds=round(seconds)),
            ),
            timeout=CALL_TIMEOUT_S,
        )
        watch = reply.watch
        if fmt is OutputFormat.JSON:
            document = {"watch": watch_document(watch), "created": reply.created}
            print_result(fmt, document, [])
        elif reply.created:
            console.print(f"watching {_summary(watch)}; the first run starts now")
        else:
            console.print(
                f"now watching {_summary(watch)}; next run {local_time(watch.next_run_at)}"
            )
        return 0

    run_on_router(router, body)


@watch_playlist_app.command("list")
def watch_list(
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """Every watched playlist: interval, next run, last result."""
    fmt = output_format(output, json_output=json_output, wide=wide)

    async def body(channel: grpc.aio.Channel) -> int:
        reply = await _stub(channel).ListPlaylistWatches(
            watches_pb2.ListPlaylistWatchesRequest(), timeout=CALL_TIMEOUT_S
        )
        watches = list(reply.watches)
        if not watches and fmt is not OutputFormat.JSON:
            console.print("no playlist is watched")
            return 0
        document = {"watches": [watch_document(w) for w in watches]}
        print_result(fmt, document, [watched_playlists_table(watches)])
        return 0

    run_on_router(router, body)


@watch_playlist_app.command("run")
def watch_run(
    playlist: Annotated[str, typer.Argument(help="The watched playlist: its id or share URL.")],
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Give up waiting after this many seconds.")
    ] = 600.0,
    json_output: JsonOption = False,
    router: RouterOption = None,
) -> None:
    """Run a watch now and print what it did; its next run is counted from now."""
    fmt = output_format(json_output=json_output)

    async def body(channel: grpc.aio.Channel) -> int:
        reply = await _stub(channel).RunPlaylistWatch(
            watches_pb2.RunPlaylistWatchRequest(playlist_id=playlist), timeout=timeout
        )
        watch = reply.watch
        line = f"{_summary(watch)}: {watch.last_result}"
        if fmt is OutputFormat.JSON:
            print_result(fmt, {"watch": watch_document(watch)}, [])
        if watch.last_run_failed:
            err_console.print(f"[red]{line}[/]")
            return 1
        if fmt is OutputFormat.JSON:
            return 0
        console.print(f"{line}; next run {local_time(watch.next_run_at)}")
        return 0

    run_on_router(router, body)


@watch_playlist_app.command("remove")
def watch_remove(
    playlist: Annotated[str, typer.Argument(help="The watched playlist: its id or share URL.")],
    json_output: JsonOption = False,
    router: RouterOption = None,
) -> None:
    """Stop watching a playlist."""
    fmt = output_format(json_output=json_output)

    async def body(channel: grpc.aio.Channel) -> int:
        reply = await _stub(channel).RemovePlaylistWatch(
            watches_pb2.RemovePlaylistWatchRequest(playlist_id=playlist), timeout=CALL_TIMEOUT_S
        )
        if fmt is OutputFormat.JSON:
            print_result(fmt, {"watch": watch_document(reply.watch)}, [])
        else:
            console.print(f"stopped watching {_summary(reply.watch)}")
        return 0

    run_on_router(router, body)
