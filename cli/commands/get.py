"""`soulspot get`, `soulspot sync-playlist` and `soulspot worker`: user flows over the router.

Everything goes through the router's address: capability calls through its proxy, events
through its bus. A download's outcome arrives as events (download.* from the downloader,
track.ready or pipeline.run_failed from the post-download pipeline), so every flow subscribes
BEFORE it asks for a download, with a consumer of its own that starts at new events.

A playlist sync is a work queue: one playlist.track_requested job per track, consumed by the
durable consumer "playlist-sync"; every worker (tasks of this process, or `soulspot worker`
processes elsewhere) competes for jobs, handles each one and publishes
playlist.track_handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.prompt import IntPrompt
from rich.table import Table

from cli.status_cmd import status
from services.kit.events.client import EventHandlers, RouterPublisher, Subscriber
from services.kit.rpc.channel import open_channel
from services.kit.rpc.context import bind, new_correlation_id, new_traceparent
from services.kit.rpc.errors import MeshError, from_rpc_error
from soulspot.capabilities.v1 import (
    download_pb2,
    download_pb2_grpc,
    library_pb2,
    library_pb2_grpc,
    playlist_pb2,
    playlist_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import pipeline_pb2 as pipeline_events_pb2
from soulspot.events.v1 import playlist_pb2 as playlist_events_pb2
from soulspot.events.v1 import track_pb2 as track_events_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from soulspot.events.v1 import envelope_pb2

DEFAULT_ROUTER = "127.0.0.1:50051"
WORK_QUEUE = "playlist-sync"
CLIENT = "cli"
# The events that end (or report on) one download, from the downloader and the pipeline.
OUTCOME_EVENTS = ("download.*", "track.ready", "pipeline.run_failed")

RouterOption = Annotated[
    str,
    typer.Option("--router", envvar="SOULSPOT_ROUTER_ADDRESS", help="The router's gRPC address."),
]

# Subscribers find a payload's class in the default descriptor pool: the event contracts this
# client handles must be loaded, whether or not the code names their classes.
EVENT_CONTRACTS = (download_events_pb2, pipeline_events_pb2, playlist_events_pb2, track_events_pb2)

console = Console()
err_console = Console(stderr=True)


def _describe(track: references_pb2.TrackReference) -> str:
    return f"{track.artist} - {track.title}" if track.artist else track.title


def _instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def _call(awaitable: Awaitable[Any]) -> Any:
    """Await a gRPC call, turning its failure into the typed mesh error."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from err


# --- watching one download's events ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # "downloaded", "already_in_library" or "failed"
    detail: str


# A command's own consumers (a fresh name each run) go once it has been gone this long: long
# enough to ride out a router restart, short enough that status does not fill with them.
WATCHER_IDLE_S = 600.0


class DownloadWatch:
    """One subscription to download/pipeline events, sorted by download_id.

    Events can arrive before the caller knows the download id (a local source finishes before
    DownloadTrack answers), so recent events of unclaimed downloads are kept, up to a bound.
    """

    KEEP_UNCLAIMED = 1000

    def __init__(self, channel: grpc.aio.Channel, name: str) -> None:
        handlers = EventHandlers()
        for pattern in OUTCOME_EVENTS:
            handlers.add(pattern, self._on_event)
        self.subscriber = Subscriber(
            channel,
            consumer=f"cli-{name}-{uuid.uuid4().hex[:12]}",
            handlers=handlers,
            start=router_pb2.START_POSITION_NEW,
            instance=_instance(),
            inactive_threshold_s=WATCHER_IDLE_S,
        )
        self._queues: dict[str, asyncio.Queue[tuple[str, Any]]] = {}
        self._unclaimed: OrderedDict[str, list[tuple[str, Any]]] = OrderedDict()

    async def start(self) -> None:
        await self.subscriber.start()
        await self.subscriber.wait_connected()

    async def stop(self) -> None:
        await self.subscriber.stop()

    async def _on_event(self, payload: Any, envelope: envelope_pb2.EventEnvelope) -> None:
        download_id = getattr(payload, "download_id", "")
        if not download_id:
            return
        item = (envelope.event_type, payload)
        queue = self._queues.get(download_id)
        if queue is not None:
            queue.put_nowait(item)
            return
        self._unclaimed.setdefault(download_id, []).append(item)
        self._unclaimed.move_to_end(download_id)
        while len(self._unclaimed) > self.KEEP_UNCLAIMED:
            self._unclaimed.popitem(last=False)

    def claim(self, download_id: str) -> asyncio.Queue[tuple[str, Any]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for item in self._unclaimed.pop(download_id, []):
            queue.put_nowait(item)
        self._queues[download_id] = queue
        return queue

    def release(self, download_id: str) -> None:
        self._queues.pop(download_id, None)

    async def outcome(
        self,
        download_id: str,
        *,
        on_progress: Callable[[float, str], None] | None = None,
    ) -> Outcome:
        """Until the download ends in the library (track.ready) or fails."""
        queue = self.claim(download_id)
        try:
            while True:
                event_type, payload = await queue.get()
                if event_type == "download.progress" and on_progress is not None:
                    on_progress(float(payload.percent), payload.state or "downloading")
                elif event_type == "download.started" and on_progress is not None:
                    on_progress(0.0, f"from {payload.source}" if payload.source else "started")
                elif event_type == "download.completed" and on_progress is not None:
                    on_progress(100.0, "downloaded, importing")
                elif event_type == "download.failed":
                    return Outcome("failed", f"download failed: {payload.reason}")
                elif event_type == "pipeline.run_failed":
                    return Outcome("failed", f"{payload.capability} failed: {payload.reason}")
                elif event_type == "track.ready":
                    return Outcome("downloaded", payload.file.path)
        finally:
            self.release(download_id)


# --- soulspot get ----------------------------------------------------------------------------


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
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Search a track, download it and wait until it is in the library."""
    raise typer.Exit(asyncio.run(_get(query, pick, choose, timeout, router)))


async def _get(query: str, pick: int, choose: bool, limit_s: float, router: str) -> int:
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
                index = _choose(results) if choose else pick
                if index > len(results):
                    err_console.print(f"[red]only {len(results)} results; --pick {index} is out[/]")
                    return 2
                track = results[index - 1].track
            elif typed is not None:
                console.print("no catalog knows it yet: asking the downloaders as typed")
                track = typed
            else:
                err_console.print(f'[red]nothing found for[/] {query!r} (try "Artist - Title")')
                return 1
            existing = await _in_library(library_pb2_grpc.LibraryServiceStub(channel), track)
            if existing is not None:
                console.print(f"[green]already in the library:[/] {existing}")
                return 0
            console.print(f"getting [bold]{_describe(track)}[/]")
            watch = DownloadWatch(channel, "get")
            await watch.start()
            try:
                return await _download_one(channel, watch, track, limit_s)
            finally:
                await watch.stop()


async def _in_library(
    library: library_pb2_grpc.LibraryServiceAsyncStub, track: references_pb2.TrackReference
) -> str | None:
    """Where the library already holds the track, or None (also when no library answers:
    then the download goes ahead and the library's duplicate check still applies)."""
    try:
        check = await _call(
            library.CheckDownloaded(library_pb2.CheckDownloadedRequest(track=track), timeout=15)
        )
    except MeshError:
        return None
    return check.file.path if check.downloaded else None


def track_from_query(query: str) -> references_pb2.TrackReference | None:
    """The track a query names as "Artist - Title", or None when it is not of that form."""
    artist, sep, title = query.partition(" - ")
    if not sep or not artist.strip() or not title.strip():
        return None
    return references_pb2.TrackReference(artist=artist.strip(), title=title.strip())


async def _search(channel: grpc.aio.Channel, query: str) -> list[search_pb2.SearchResult]:
    stub = search_pb2_grpc.SearchServiceStub(channel)
    reply = await _call(stub.SearchTrack(search_pb2.SearchTrackRequest(query=query), timeout=30))
    return list(reply.results)


def _choose(results: list[search_pb2.SearchResult]) -> int:
    table = Table(title="Search results")
    for column in ("#", "artist", "title", "album", "score", "source", "in library"):
        table.add_column(column)
    for number, result in enumerate(results, 1):
        t = result.track
        table.add_row(
            str(number),
            t.artist,
            t.title,
            t.album,
            f"{result.score:.2f}",
            result.source,
            "yes" if result.in_library else "",
        )
    console.print(table)
    return IntPrompt.ask(
        "Which one", choices=[str(n) for n in range(1, len(results) + 1)], default=1
    )


async def _download_one(
    channel: grpc.aio.Channel,
    watch: DownloadWatch,
    track: references_pb2.TrackReference,
    timeout: float,  # noqa: ASYNC109 (bounds the whole wait)
) -> int:
    stub = download_pb2_grpc.DownloadServiceStub(channel)
    try:
        started = await _call(
            stub.DownloadTrack(
                download_pb2.DownloadTrackRequest(track=track, requested_by=CLIENT), timeout=60
            )
        )
    except MeshError as err:
        err_console.print(f"[red]download failed:[/] {err.message}")
        return 1
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(f"{_describe(track)} (from {started.source or '?'})", total=100)

        def on_progress(percent: float, state: str) -> None:
            progress.update(bar, completed=percent, description=f"{_describe(track)}: {state}")

        try:
            async with asyncio.timeout(timeout):
                outcome = await watch.outcome(started.download_id, on_progress=on_progress)
        except TimeoutError:
            outcome = Outcome("failed", f"timed out after {timeout:.0f}s")
    if outcome.outcome == "failed":
        err_console.print(f"[red]{_describe(track)}: {outcome.detail}[/]")
        return 1
    console.print(f"[green]ready:[/] {outcome.detail}")
    return 0


# --- playlist sync: the work queue ----------------------------------------------------------


class PlaylistWorker:
    """Takes playlist.track_requested jobs from the shared queue, one at a time."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        consumer: str = WORK_QUEUE,
        name: str = "",
        track_timeout_s: float = 300.0,
    ) -> None:
        self.name = name or _instance()
        self._channel = channel
        self._track_timeout_s = track_timeout_s
        self._library = library_pb2_grpc.LibraryServiceStub(channel)
        self._downloads = download_pb2_grpc.DownloadServiceStub(channel)
        self._publisher = RouterPublisher(channel, source_module=CLIENT)
        self._watch = DownloadWatch(channel, "worker")
        handlers = EventHandlers()
        handlers.add("playlist.track_requested", self._on_job)
        self.handled = 0
        self.subscriber = Subscriber(
            channel,
            consumer=consumer,
            handlers=handlers,
            # One job at a time per worker: competing workers share the queue fairly.
            max_in_flight=1,
            ack_timeout_s=track_timeout_s + 60.0,
            instance=self.name,
        )

    async def start(self) -> None:
        await self._watch.start()
        await self.subscriber.start()
        await self.subscriber.wait_connected()

    async def stop(self) -> None:
        await self.subscriber.stop()
        await self._watch.stop()

    async def _on_job(
        self,
        job: playlist_events_pb2.PlaylistTrackRequested,
        envelope: envelope_pb2.EventEnvelope,
    ) -> None:
        outcome = await self.handle(job.track, job.quality)
        # An error publishing propagates: the job is nacked and handled again.
        await self._publisher.publish(
            playlist_events_pb2.PlaylistTrackHandled(
                sync_id=job.sync_id,
                track=job.track,
                position=job.position,
                outcome=outcome.outcome,
                detail=outcome.detail,
                worker=self.name,
            ),
            subject=job.sync_id,
        )
        self.handled += 1

    async def handle(
        self,
        track: references_pb2.TrackReference,
        quality: references_pb2.QualityPolicy | None = None,
    ) -> Outcome:
        existing = await _in_library(self._library, track)
        if existing is not None:
            return Outcome("already_in_library", existing)
        request = download_pb2.DownloadTrackRequest(track=track, requested_by=CLIENT)
        if quality is not None and quality.ByteSize():
            request.quality.CopyFrom(quality)
        try:
            started = await _call(self._downloads.DownloadTrack(request, timeout=60))
        except MeshError as err:
            return Outcome("failed", f"{err.code.name}: {err.message}")
        try:
            async with asyncio.timeout(self._track_timeout_s):
                return await self._watch.outcome(started.download_id)
        except TimeoutError:
            return Outcome("failed", f"no outcome within {self._track_timeout_s:.0f}s")


def sync_playlist(
    playlist: Annotated[str, typer.Argument(help="A playlist id or share URL.")],
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=0, help="Local workers (0: rely on `soulspot worker` processes)."
        ),
    ] = 2,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Give up after this many seconds.")
    ] = 3600.0,
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Bring every track of a playlist into the library, through the shared work queue."""
    raise typer.Exit(asyncio.run(_sync_playlist(playlist, workers, timeout, router)))


async def _sync_playlist(playlist: str, workers: int, limit_s: float, router: str) -> int:
    with bind(new_correlation_id(), new_traceparent()):
        async with open_channel(router) as channel:
            try:
                tracks = await _playlist_tracks(channel, playlist)
            except MeshError as err:
                err_console.print(f"[red]cannot read the playlist:[/] {err.message}")
                return 1
            if not tracks:
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
            collector = Subscriber(
                channel,
                consumer=f"cli-sync-{sync_id}",
                handlers=handlers,
                start=router_pb2.START_POSITION_NEW,
                instance=_instance(),
                inactive_threshold_s=WATCHER_IDLE_S,
            )
            local = [
                PlaylistWorker(channel, name=f"{_instance()}-w{n}") for n in range(1, workers + 1)
            ]
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            bar = progress.add_task(f"playlist {playlist}", total=len(tracks))
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
            _print_outcomes(tracks, results)
            failed = [r for r in results.values() if r.outcome == "failed"]
            missing = len(tracks) - len(results)
            if missing:
                err_console.print(f"[red]{missing} tracks not handled within {limit_s:.0f}s[/]")
            return 1 if failed or missing else 0


async def _playlist_tracks(
    channel: grpc.aio.Channel, playlist: str
) -> list[tuple[int, references_pb2.TrackReference]]:
    stub = playlist_pb2_grpc.PlaylistServiceStub(channel)
    tracks: list[tuple[int, references_pb2.TrackReference]] = []
    call = stub.ListPlaylistTracks(
        playlist_pb2.ListPlaylistTracksRequest(playlist_id=playlist), timeout=120
    )
    try:
        async for item in call:
            tracks.append((item.position or len(tracks) + 1, item.track))
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from err
    return tracks


def _print_outcomes(
    tracks: list[tuple[int, references_pb2.TrackReference]],
    results: dict[int, playlist_events_pb2.PlaylistTrackHandled],
) -> None:
    table = Table(title="Playlist sync")
    for column in ("#", "track", "outcome", "detail", "worker"):
        table.add_column(column)
    styles = {"downloaded": "green", "already_in_library": "cyan", "failed": "red"}
    for position, track in tracks:
        result = results.get(position)
        outcome = result.outcome if result else "not handled"
        table.add_row(
            str(position),
            _describe(track),
            f"[{styles.get(outcome, 'yellow')}]{outcome}[/]",
            result.detail if result else "",
            result.worker if result else "",
        )
    console.print(table)


def worker(
    consumer: Annotated[
        str, typer.Option("--consumer", help="The work queue (durable consumer) to serve.")
    ] = WORK_QUEUE,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Jobs handled at once.")
    ] = 1,
    router: RouterOption = DEFAULT_ROUTER,
) -> None:
    """Serve playlist jobs from the shared queue until stopped (Ctrl-C or SIGTERM)."""
    raise typer.Exit(asyncio.run(_worker(consumer, concurrency, router)))


async def _worker(consumer: str, concurrency: int, router: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_channel(router) as channel:
        workers = [
            PlaylistWorker(channel, consumer=consumer, name=f"{_instance()}-w{n}")
            for n in range(1, concurrency + 1)
        ]
        for w in workers:
            await w.start()
        console.print(f"worker serving {consumer!r} on {router} ({concurrency} at a time)")
        try:
            await stop.wait()
        finally:
            for w in workers:
                await w.stop()
        console.print(f"worker stopped after {sum(w.handled for w in workers)} jobs")
    return 0


def _standalone() -> typer.Typer:
    """These commands on their own, for `python -m cli.flows` (the soulspot CLI mounts them)."""
    app = typer.Typer(add_completion=False, no_args_is_help=True)
    app.command("get")(get)
    app.command("sync-playlist")(sync_playlist)
    app.command("worker")(worker)
    app.command("status")(status)
    return app


if __name__ == "__main__":
    _standalone()()
