"""`soulspot sync-playlist`: every track of a playlist into the library, through the shared
work queue.

The tracks come from the playlist.tracks capability (a Spotify playlist, or `liked` for the
user's liked songs), or from a file: `--csv` (Artist, Title, Album, Length columns) or
`--list` ("Artist - Title" lines). Once the jobs are handled, the library writes the
playlist's M3U file (unless `--no-m3u`), named after the playlist or `--name`, through the
library's naming rules either way.

One playlist.track_requested job per track goes to the queue that local workers (and any
`soulspot worker` processes) consume; the command collects their playlist.track_handled
events for this sync and prints a table of outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path  # noqa: TC003 (typer reads the annotation at runtime)
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from cli.console import console, err_console
from cli.download_watch import watcher_subscriber
from cli.identity import CLIENT, instance_name
from cli.output import (
    JsonOption,
    OutputFormat,
    OutputOption,
    WideOption,
    output_format,
    print_result,
)
from cli.playlist_file import write_m3u
from cli.playlist_worker import PlaylistWorker
from cli.router_connection import RouterOption, router_address
from cli.sources import SourceError, read_csv, read_list
from cli.tables import playlist_outcomes_table
from services.kit.clients.playlist import read_playlist
from services.kit.events.client import EventHandlers, RouterPublisher
from services.kit.rpc.channel import open_channel
from services.kit.rpc.context import bind, new_correlation_id, new_traceparent
from services.kit.rpc.errors import MeshError
from soulspot.events.v1 import playlist_pb2 as playlist_events_pb2

if TYPE_CHECKING:
    from soulspot.common.v1 import references_pb2
    from soulspot.events.v1 import envelope_pb2

    Tracks = list[tuple[int, references_pb2.TrackReference]]


def sync_playlist(
    playlist: Annotated[
        str | None,
        typer.Argument(help="A playlist id or share URL, or `liked` for your liked songs."),
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="A CSV file with Artist, Title, Album, Length columns."),
    ] = None,
    list_file: Annotated[
        Path | None, typer.Option("--list", help='A text file of "Artist - Title" lines.')
    ] = None,
    m3u: Annotated[
        bool, typer.Option("--m3u/--no-m3u", help="Write the playlist's M3U in the library.")
    ] = True,
    m3u_name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The M3U file's name instead of the playlist's (the library's naming rules "
            "still apply).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=0, help="Local workers (0: rely on `soulspot worker` processes)."
        ),
    ] = 2,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Give up after this many seconds.")
    ] = 3600.0,
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """Bring every track of a playlist into the library, through the shared work queue."""
    fmt = output_format(output, json_output=json_output, wide=wide)
    given = [g for g in (playlist, csv_file, list_file) if g is not None]
    if len(given) != 1:
        err_console.print("[red]name one source:[/] a playlist, --csv FILE or --list FILE")
        raise typer.Exit(2)
    if m3u_name is not None and (not m3u or not m3u_name.strip()):
        why = "names the M3U file, which --no-m3u skips" if not m3u else "must not be blank"
        err_console.print(f"[red]--name {why}[/]")
        raise typer.Exit(2)
    from_file: tuple[str, Tracks] | None = None
    try:
        if csv_file is not None:
            from_file = csv_file.stem, list(enumerate(read_csv(csv_file), 1))
        elif list_file is not None:
            from_file = list_file.stem, list(enumerate(read_list(list_file), 1))
    except SourceError as err:
        # Nothing is started for a file that cannot be read whole.
        err_console.print(f"[red]cannot read the track list:[/] {err}")
        raise typer.Exit(1) from err
    raise typer.Exit(
        asyncio.run(
            _sync_playlist(
                playlist or "",
                from_file,
                workers,
                timeout,
                router_address(router),
                m3u=m3u,
                m3u_name=m3u_name,
                fmt=fmt,
            )
        )
    )


async def _sync_playlist(
    playlist: str,
    from_file: tuple[str, Tracks] | None,
    workers: int,
    limit_s: float,
    router: str,
    *,
    m3u: bool,
    m3u_name: str | None = None,
    fmt: OutputFormat = OutputFormat.TABLE,
) -> int:
    with bind(new_correlation_id(), new_traceparent()):
        async with open_channel(router) as channel:
            if from_file is not None:
                name, tracks = from_file
            else:
                try:
                    read = await read_playlist(channel, playlist)
                except MeshError as err:
                    err_console.print(f"[red]cannot read the playlist:[/] {err.message}")
                    return 1
                name, tracks = read.name or playlist, read.tracks
            if not tracks:
                if fmt is OutputFormat.JSON:
                    print_result(fmt, _sync_document(name, "", [], {}), [])
                else:
                    console.print("the playlist is empty")
                return 0
            sync_id = uuid.uuid4().hex
            results: dict[int, playlist_events_pb2.PlaylistTrackHandled] = {}
            all_handled = asyncio.Event()

            async def on_handled(
                payload: playlist_events_pb2.PlaylistTrackHandled,
                envelope: envelope_pb2.EventEnvelope,
            ) -> None:
                if payload.sync_id != sync_id:
                    return
                results.setdefault(payload.position, payload)
                progress.update(bar, completed=len(results))
                if len(results) >= len(tracks):
                    all_handled.set()

            handlers = EventHandlers()
            handlers.add("playlist.track_handled", on_handled)
            collector = watcher_subscriber(channel, f"cli-sync-{sync_id}", handlers)
            local = [
                PlaylistWorker(channel, name=f"{instance_name()}-w{n}")
                for n in range(1, workers + 1)
            ]
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                # Standard output carries only the JSON document when one is asked for.
                console=err_console if fmt is OutputFormat.JSON else console,
            )
            bar = progress.add_task(f"playlist {name}", total=len(tracks))
            await collector.start()
            await collector.wait_connected()
            for worker in local:
                await worker.start()
            try:
                publisher = RouterPublisher(channel, source_module=CLIENT)
                with progress:
                    for position, track in tracks:
                        await publisher.publish(
                            playlist_events_pb2.PlaylistTrackRequested(
                                sync_id=sync_id, track=track, position=position, total=len(tracks)
                            ),
                            subject=sync_id,
                        )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(limit_s):
                            await all_handled.wait()
            finally:
                for worker in local:
                    await worker.stop()
                await collector.stop()
            print_result(
                fmt,
                _sync_document(name, sync_id, tracks, results),
                [playlist_outcomes_table(tracks, results)],
            )
            failed = [r for r in results.values() if r.outcome == "failed"]
            missing = len(tracks) - len(results)
            if missing:
                err_console.print(f"[red]{missing} tracks not handled within {limit_s:.0f}s[/]")
            if m3u:
                # Its note is for people: on standard error when standard output is JSON.
                notes = err_console if fmt is OutputFormat.JSON else console
                await write_m3u(channel, m3u_name or name, tracks, out=notes)
            return 1 if failed or missing else 0


def _sync_document(
    name: str,
    sync_id: str,
    tracks: Tracks,
    results: dict[int, playlist_events_pb2.PlaylistTrackHandled],
) -> dict[str, object]:
    """`sync-playlist --json`: each track's outcome (`not_handled` when none came in time)."""
    rows = []
    for position, track in tracks:
        result = results.get(position)
        rows.append(
            {
                "position": position,
                "artist": track.artist,
                "title": track.title,
                "album": track.album,
                "outcome": result.outcome if result else "not_handled",
                "detail": result.detail if result else "",
                "worker": result.worker if result else "",
            }
        )
    return {
        "playlist": name,
        "sync_id": sync_id,
        "tracks": rows,
        "failed": sum(1 for r in rows if r["outcome"] == "failed"),
        "not_handled": sum(1 for r in rows if r["outcome"] == "not_handled"),
    }
