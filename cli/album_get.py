"""`soulspot get --album "Artist - Album"`: download a whole album folder and wait until every
track is in the library.

The track list comes from album.tracks (the spotify module); when no module can answer it,
the downloaders pick a folder by its shape alone (one format, a folder named like the album),
and the command says so. The album's events (album.download_started, album.ready,
album.failed) arrive on one subscription, made BEFORE DownloadAlbum is asked for: a local
source may finish first. With `--json` the result is one document on standard output
(`album_document`); notes and errors go to standard error.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from cli.console import console, err_console
from cli.download_watch import watcher_subscriber
from cli.identity import CLIENT
from cli.output import OutputFormat, print_result
from cli.router_connection import call
from services.kit.events.client import EventHandlers
from services.kit.rpc.channel import open_channel
from services.kit.rpc.context import bind, new_correlation_id, new_traceparent
from services.kit.rpc.errors import MeshError
from soulspot.capabilities.v1 import album_pb2, album_pb2_grpc
from soulspot.events.v1 import album_pb2 as album_events_pb2

if TYPE_CHECKING:
    import grpc
    from rich.console import Console

    from soulspot.common.v1 import references_pb2
    from soulspot.events.v1 import envelope_pb2

__all__ = ["album_document", "album_from_query", "get_album", "run"]

ALBUM_REQUEST_TIMEOUT_S = 120.0
LOOKUP_TIMEOUT_S = 30.0
# Subscribers find payload classes in the default pool: the album contracts must be loaded.
EVENT_CONTRACTS = (album_events_pb2,)


def album_from_query(query: str) -> tuple[str, str] | None:
    """(artist, album) from "Artist - Album", or None when the query is not of that form."""
    artist, sep, album = query.partition(" - ")
    if not sep or not artist.strip() or not album.strip():
        return None
    return artist.strip(), album.strip()


class _AlbumWatch:
    """The album.* events of this run's albums, by album id (kept until claimed)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        handlers = EventHandlers()
        handlers.add("album.*", self._on_event)
        self.subscriber = watcher_subscriber(
            channel, f"cli-get-album-{uuid.uuid4().hex[:12]}", handlers
        )
        self.events: dict[str, asyncio.Queue[tuple[str, Any]]] = {}

    def queue(self, album_id: str) -> asyncio.Queue[tuple[str, Any]]:
        return self.events.setdefault(album_id, asyncio.Queue())

    async def _on_event(self, payload: Any, envelope: envelope_pb2.EventEnvelope) -> None:
        album_id = getattr(payload, "album_download_id", "")
        if album_id:
            self.queue(album_id).put_nowait((envelope.event_type, payload))


def album_document(
    query: str,
    artist: str,
    album: str,
    started: album_pb2.DownloadAlbumResponse,
    *,
    outcome: str,
    reason: str = "",
    tracks: Any = (),
) -> dict[str, Any]:
    """`get --album --json`: the album, the folder taken, and each track's library path.

    `outcome` is `ready` or `failed` (with `reason`); a track's `outcome` is `imported` (its
    `path` in the library) or `failed` (with `error`)."""
    return {
        "query": query,
        "artist": artist,
        "album": album,
        "album_download_id": started.album_download_id,
        "source": started.source,
        "folder": started.folder,
        "track_count": started.track_count,
        "outcome": outcome,
        "reason": reason,
        "tracks": [
            {
                "title": t.title,
                "download_id": t.download_id,
                "outcome": "imported" if t.path else "failed",
                "path": t.path or None,
                "error": t.error,
            }
            for t in tracks
        ],
    }


async def _track_list(
    channel: grpc.aio.Channel, artist: str, album: str, notes: Console = console
) -> list[references_pb2.TrackReference]:
    """The album's tracks from album.tracks; empty (with the reason printed) when unknown."""
    stub = album_pb2_grpc.AlbumCatalogServiceStub(channel)
    try:
        found = await call(
            stub.GetAlbumTracks(
                album_pb2.GetAlbumTracksRequest(artist=artist, album=album),
                timeout=LOOKUP_TIMEOUT_S,
            )
        )
    except MeshError as err:
        notes.print(f"[yellow]no track list:[/] {err.message}")
        return []
    return list(found.tracks)


async def get_album(
    channel: grpc.aio.Channel,
    query: str,
    timeout: float,  # noqa: ASYNC109 (bounds the whole wait)
    *,
    fmt: OutputFormat = OutputFormat.TABLE,
) -> int:
    """Ask for the album, then print each track's library path once album.ready arrives.
    The exit code: 0 when every track is in the library, 1 otherwise."""
    # Standard output carries only the JSON document when one is asked for.
    as_json = fmt is OutputFormat.JSON
    notes = err_console if as_json else console
    named = album_from_query(query)
    if named is None:
        err_console.print(f'[red]--album needs "Artist - Album", not[/] {query!r}')
        return 2
    artist, album = named
    tracks = await _track_list(channel, artist, album, notes)
    if tracks:
        notes.print(f"getting the album [bold]{artist} - {album}[/] ({len(tracks)} tracks)")
    else:
        notes.print(
            f"getting the album [bold]{artist} - {album}[/] (no track list: the folder is "
            "chosen by its shape, one format, named like the album)"
        )
    watch = _AlbumWatch(channel)
    await watch.subscriber.start()
    await watch.subscriber.wait_connected()
    try:
        stub = album_pb2_grpc.AlbumServiceStub(channel)
        try:
            started = await call(
                stub.DownloadAlbum(
                    album_pb2.DownloadAlbumRequest(
                        artist=artist, album=album, tracks=tracks, requested_by=CLIENT
                    ),
                    timeout=ALBUM_REQUEST_TIMEOUT_S,
                )
            )
        except MeshError as err:
            err_console.print(f"[red]album download failed:[/] {err.message}")
            return 1
        notes.print(f"fetching {started.track_count} files from {started.source}: {started.folder}")
        queue = watch.queue(started.album_download_id)

        def print_document(outcome: str, *, reason: str = "", tracks: Any = ()) -> None:
            """With --json, the album's document (the folder taken is the latest attempt's)."""
            if as_json:
                document = album_document(
                    query, artist, album, started, outcome=outcome, reason=reason, tracks=tracks
                )
                print_result(fmt, document, [])

        try:
            async with asyncio.timeout(timeout):
                while True:
                    event_type, payload = await queue.get()
                    if event_type == "album.download_started" and payload.attempt > 1:
                        notes.print(
                            f"the previous folder failed; now {payload.source}: {payload.folder}"
                        )
                        started.source, started.folder = payload.source, payload.folder
                    elif event_type == "album.failed":
                        err_console.print(f"[red]album failed:[/] {payload.reason}")
                        for track in payload.tracks:
                            where = track.path or f"not imported ({track.error})"
                            err_console.print(f"  {track.title}: {where}")
                        print_document("failed", reason=payload.reason, tracks=payload.tracks)
                        return 1
                    elif event_type == "album.ready":
                        if as_json:
                            print_document("ready", tracks=payload.tracks)
                            return 0
                        console.print(f"[green]album ready:[/] {artist} - {album}")
                        for track in payload.tracks:
                            console.print(f"  {track.path}")
                        return 0
        except TimeoutError:
            reason = f"timed out after {timeout:.0f}s"
            err_console.print(f"[red]album: {reason}[/]")
            print_document("failed", reason=reason)
            return 1
    finally:
        await watch.subscriber.stop()


async def run(
    query: str,
    timeout: float,  # noqa: ASYNC109 (bounds the whole wait)
    router: str,
    *,
    fmt: OutputFormat = OutputFormat.TABLE,
) -> int:
    """`get_album` on a channel to the router, under a fresh correlation id."""
    with bind(new_correlation_id(), new_traceparent()):
        async with open_channel(router) as channel:
            return await get_album(channel, query, timeout, fmt=fmt)
