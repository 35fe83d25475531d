"""`soulspot get`: search a track, download it and wait until it is in the library.

Everything goes through the router's address: capability calls through its proxy, events
through its bus. The download's outcome arrives as events (cli/download_watch.py), so the
watch subscribes BEFORE the download is asked for.

With `--json` the result is one document on standard output (`get_document`, or the album's
from cli/album_get.py); progress, notes and errors go to standard error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.prompt import IntPrompt

from cli import album_get
from cli.console import console, err_console
from cli.download_watch import DownloadWatch, Outcome
from cli.identity import CLIENT
from cli.output import (
    JsonOption,
    OutputFormat,
    OutputOption,
    WideOption,
    output_format,
    print_result,
)
from cli.router_connection import RouterOption, call, router_address
from cli.tables import describe_track, search_results_table
from services.kit.clients.downloads import in_library
from services.kit.rpc.channel import open_channel
from services.kit.rpc.context import bind, new_correlation_id, new_traceparent
from services.kit.rpc.errors import MeshError
from soulspot.capabilities.v1 import (
    download_pb2,
    download_pb2_grpc,
    library_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from rich.console import Console

SEARCH_TIMEOUT_S = 30.0
DOWNLOAD_REQUEST_TIMEOUT_S = 60.0


def get(
    query: Annotated[str, typer.Argument(help='What to look for, e.g. "Artist - Title".')],
    pick: Annotated[
        int, typer.Option("--pick", min=1, help="Take the N-th search result (1 = best).")
    ] = 1,
    choose: Annotated[
        bool, typer.Option("--choose", help="Show the results and ask which one to take.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Give up after this many seconds.")
    ] = 300.0,
    album: Annotated[
        bool,
        typer.Option("--album", help='Get a whole album folder: QUERY is "Artist - Album".'),
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
    json_output: JsonOption = False,
    wide: WideOption = False,
    router: RouterOption = None,
) -> None:
    """Search a track, download it and wait until it is in the library."""
    fmt = output_format(output, json_output=json_output, wide=wide)
    address = router_address(router)
    if album:
        raise typer.Exit(asyncio.run(album_get.run(query, timeout, address, fmt=fmt)))
    raise typer.Exit(asyncio.run(_get(query, pick, choose, timeout, address, fmt)))


def get_document(
    query: str,
    track: references_pb2.TrackReference,
    outcome: Outcome,
    *,
    source: str = "",
    download_id: str = "",
) -> dict[str, Any]:
    """`get --json`: the track taken, where the library holds it, and where it came from.

    `outcome` is `downloaded`, `already_in_library` or `failed`; `library_path` is null
    unless the library holds the track, `detail` says why when it failed."""
    held = outcome.outcome != "failed"
    return {
        "query": query,
        "track": {
            "artist": track.artist,
            "title": track.title,
            "album": track.album,
            "spotify_id": track.spotify_id,
        },
        "outcome": outcome.outcome,
        "library_path": outcome.detail if held else None,
        "source": source,
        "download_id": download_id,
        "detail": "" if held else outcome.detail,
    }


async def _get(
    query: str,
    pick: int,
    choose: bool,
    limit_s: float,
    router: str,
    fmt: OutputFormat = OutputFormat.TABLE,
) -> int:
    # Standard output carries only the JSON document when one is asked for.
    notes = err_console if fmt is OutputFormat.JSON else console
    with bind(new_correlation_id(), new_traceparent()):
        async with open_channel(router) as channel:
            typed = track_from_query(query)
            try:
                results = await _search(channel, query)
            except MeshError as err:
                # No catalog at all (offline, no Spotify): "Artist - Title" is enough for a
                # downloader, which searches its own sources.
                if typed is None or err.code != grpc.StatusCode.UNAVAILABLE:
                    err_console.print(f"[red]search failed:[/] {err.message}")
                    return 1
                results = []
            if results:
                index = _choose(results, notes) if choose else pick
                if index > len(results):
                    err_console.print(f"[red]only {len(results)} results; --pick {index} is out[/]")
                    return 2
                track = results[index - 1].track
            elif typed is not None:
                notes.print("no catalog knows it yet: asking the downloaders as typed")
                track = typed
            else:
                err_console.print(f'[red]nothing found for[/] {query!r} (try "Artist - Title")')
                return 1
            existing = await in_library(library_pb2_grpc.LibraryServiceStub(channel), track)
            if existing is not None:
                if fmt is OutputFormat.JSON:
                    held = Outcome("already_in_library", existing)
                    print_result(fmt, get_document(query, track, held), [])
                else:
                    console.print(f"[green]already in the library:[/] {existing}")
                return 0
            notes.print(f"getting [bold]{describe_track(track)}[/]")
            watch = DownloadWatch(channel, "get")
            await watch.start()
            try:
                return await _download_one(channel, watch, track, limit_s, query=query, fmt=fmt)
            finally:
                await watch.stop()


def track_from_query(query: str) -> references_pb2.TrackReference | None:
    """The track a query names as "Artist - Title", or None when it is not of that form."""
    artist, sep, title = query.partition(" - ")
    if not sep or not artist.strip() or not title.strip():
        return None
    return references_pb2.TrackReference(artist=artist.strip(), title=title.strip())


async def _search(channel: grpc.aio.Channel, query: str) -> list[search_pb2.SearchResult]:
    stub = search_pb2_grpc.SearchServiceStub(channel)
    reply = await call(
        stub.SearchTrack(search_pb2.SearchTrackRequest(query=query), timeout=SEARCH_TIMEOUT_S)
    )
    return list(reply.results)


def _choose(results: list[search_pb2.SearchResult], out: Console) -> int:
    out.print(search_results_table(results))
    return IntPrompt.ask(
        "Which one",
        choices=[str(n) for n in range(1, len(results) + 1)],
        default=1,
        console=out,
    )


async def _download_one(
    channel: grpc.aio.Channel,
    watch: DownloadWatch,
    track: references_pb2.TrackReference,
    timeout: float,  # noqa: ASYNC109 (bounds the whole wait)
    *,
    query: str = "",
    fmt: OutputFormat = OutputFormat.TABLE,
) -> int:
    stub = download_pb2_grpc.DownloadServiceStub(channel)
    try:
        started = await call(
            stub.DownloadTrack(
                download_pb2.DownloadTrackRequest(track=track, requested_by=CLIENT),
                timeout=DOWNLOAD_REQUEST_TIMEOUT_S,
            )
        )
    except MeshError as err:
        err_console.print(f"[red]download failed:[/] {err.message}")
        return 1
    if fmt is not OutputFormat.JSON:
        return await wait_until_ready(
            watch, started.download_id, track, source=started.source, timeout=timeout
        )
    outcome = await wait_for_outcome(
        watch, started.download_id, track, source=started.source, timeout=timeout, out=err_console
    )
    if outcome.outcome == "failed":
        err_console.print(f"[red]{describe_track(track)}: {outcome.detail}[/]")
    document = get_document(
        query, track, outcome, source=started.source, download_id=started.download_id
    )
    print_result(fmt, document, [])
    return 1 if outcome.outcome == "failed" else 0


async def wait_until_ready(
    watch: DownloadWatch,
    download_id: str,
    track: references_pb2.TrackReference,
    *,
    source: str = "",
    timeout: float,  # noqa: ASYNC109 (bounds the whole wait)
) -> int:
    """Show the download's progress until the track is in the library; print where it is.

    The exit code: 0 once track.ready names the file in the library, 1 when the download or
    the pipeline failed or nothing ended it within `timeout` seconds.
    """
    outcome = await wait_for_outcome(watch, download_id, track, source=source, timeout=timeout)
    label = describe_track(track)
    if outcome.outcome == "failed":
        err_console.print(f"[red]{label}: {outcome.detail}[/]")
        return 1
    console.print(f"[green]ready:[/] {outcome.detail}")
    return 0


async def wait_for_outcome(
    watch: DownloadWatch,
    download_id: str,
    track: references_pb2.TrackReference,
    *,
    source: str = "",
    timeout: float,  # noqa: ASYNC109 (bounds the whole wait)
    out: Console = console,
) -> Outcome:
    """The download's outcome (failed when nothing ended it within `timeout` seconds), with
    its progress shown on `out` meanwhile."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    label = describe_track(track)
    with Progress(*columns, console=out, transient=True) as progress:
        bar = progress.add_task(f"{label} (from {source or '?'})", total=100)

        def on_progress(percent: float, state: str) -> None:
            progress.update(bar, completed=percent, description=f"{label}: {state}")

        try:
            async with asyncio.timeout(timeout):
                outcome = await watch.outcome(download_id, on_progress=on_progress)
        except TimeoutError:
            outcome = Outcome("failed", f"timed out after {timeout:.0f}s")
    return outcome
