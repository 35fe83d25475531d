"""Album-level completion: album.ready once the pipeline ran for every track of an album.

A downloader that fetched an album folder publishes download.completed per track with the
album's id and track count as envelope attributes (album_download_id, album_track_count).
This tracker follows those, then each track's track.ready or pipeline.run_failed (matched by
download id), and when every track's run has ended publishes album.ready (all imported) or
album.failed with every track's outcome (partial: the imported tracks stay in the library,
as they would after fetching them one by one). It also keeps the albums still being fetched
(album.requested, album.download_started, a downloader's album.failed) for the dashboard.

One consumer taking one event at a time, so events arrive in log order: a track's
download.completed always before its track.ready. The state is small JSON rewritten after
each change, so an album survives a router restart: a file beside the pipeline's runs
(`FileAlbumState`), or, with the runs in JetStream KV, a key of their bucket
(`KvAlbumState`), so the router that takes the album consumer over from a dead one goes on
with its albums. Every event first reads the state again if another router wrote it since
this one last did (one KV get; a file is this router's alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import nats.js.errors as js_errors

from router.pipeline.publish import derived_event_id
from services.kit.events.client import EventHandlers, Subscriber
from soulspot.events.v1 import album_pb2 as album_events_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    import grpc
    from nats.js.kv import KeyValue

    from router.pipeline.publish import RunPublisher
    from soulspot.events.v1 import download_pb2 as download_events_pb2
    from soulspot.events.v1 import envelope_pb2
    from soulspot.events.v1 import pipeline_pb2 as pipeline_events_pb2
    from soulspot.events.v1 import track_pb2 as track_events_pb2

__all__ = [
    "ALBUM_ID_ATTRIBUTE",
    "ALBUM_TRACKS_ATTRIBUTE",
    "AlbumState",
    "AlbumTracker",
    "FileAlbumState",
    "KvAlbumState",
]

_log = logging.getLogger("router.pipeline.albums")

ALBUM_ID_ATTRIBUTE = "album_download_id"
ALBUM_TRACKS_ATTRIBUTE = "album_track_count"
STATE_FILE = "albums.json"
# The key of the album state in the pipeline's KV bucket.
STATE_KEY = "albums"
# An album whose downloader never says more is forgotten after this many newer ones.
_MAX_ALBUMS = 500


@dataclass
class _Track:
    download_id: str
    title: str
    number: int
    path: str = ""
    error: str = ""
    done: bool = False


@dataclass
class _Album:
    album_download_id: str
    artist: str = ""
    album: str = ""
    stage: str = "requested"  # requested, downloading, importing
    source: str = ""
    folder: str = ""
    expected: int = 0
    tracks: list[_Track] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "album_download_id": self.album_download_id,
            "artist": self.artist,
            "album": self.album,
            "stage": self.stage,
            "source": self.source,
            "folder": self.folder,
            "tracks": self.expected,
            "tracks_done": sum(1 for t in self.tracks if t.done),
        }


class AlbumState(Protocol):
    """Where the albums in progress are kept between events."""

    async def changed(self) -> list[dict[str, Any]] | None:
        """Every album as last written, or None when nobody wrote since this tracker last
        read or wrote it."""
        ...

    async def save(self, data: list[dict[str, Any]]) -> None: ...


class FileAlbumState:
    """A JSON file this router alone writes: read once, at start."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._read = False

    async def changed(self) -> list[dict[str, Any]] | None:
        if self._read:
            return None
        self._read = True
        return await asyncio.to_thread(self._load)

    def _load(self) -> list[dict[str, Any]] | None:
        try:
            data: list[dict[str, Any]] = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            _log.warning("album state unreadable, starting afresh: %s", err)
            return None
        return data

    async def save(self, data: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._write, data)

    def _write(self, data: list[dict[str, Any]]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_suffix(".tmp")
        partial.write_text(json.dumps(data), encoding="utf-8")
        os.replace(partial, self._path)


class KvAlbumState:
    """One key of the pipeline's JetStream KV bucket, shared by the routers on that NATS;
    compressed, so even _MAX_ALBUMS abandoned albums stay far below a message's size limit.
    Read again whenever its revision is not the one this router last read or wrote."""

    def __init__(self, kv: KeyValue, key: str = STATE_KEY) -> None:
        self._kv = kv
        self._key = key
        self._revision: int | None = None

    async def changed(self) -> list[dict[str, Any]] | None:
        try:
            entry = await self._kv.get(self._key)
        except js_errors.KeyNotFoundError:
            return None
        if entry.revision == self._revision or entry.value is None:
            return None
        self._revision = entry.revision
        data: list[dict[str, Any]] = json.loads(zlib.decompress(entry.value))
        return data

    async def save(self, data: list[dict[str, Any]]) -> None:
        self._revision = await self._kv.put(self._key, zlib.compress(json.dumps(data).encode()))


class AlbumTracker:
    """Publishes album.ready / album.failed after the last track's pipeline run."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        publisher: RunPublisher,
        state_dir: Path,
        *,
        consumer: str,
        state: AlbumState | None = None,
    ) -> None:
        self._channel = channel
        self._publisher = publisher
        self._state: AlbumState = state or FileAlbumState(Path(state_dir) / STATE_FILE)
        self._consumer = consumer
        self._albums: dict[str, _Album] = {}
        self._owner: dict[str, str] = {}
        self._subscription: Subscriber | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._refresh()
        handlers = EventHandlers()
        handlers.add("album.requested", self._on_requested)
        handlers.add("album.download_started", self._on_started)
        handlers.add("album.failed", self._on_album_failed)
        handlers.add("download.completed", self._on_completed)
        handlers.add("track.ready", self._on_ready)
        handlers.add("pipeline.run_failed", self._on_run_failed)
        self._subscription = Subscriber(
            self._channel,
            consumer=self._consumer,
            handlers=handlers,
            start=router_pb2.START_POSITION_EARLIEST,
            # One at a time: a track's download.completed is seen before its track.ready.
            max_in_flight=1,
            instance="router-albums",
        )
        await self._subscription.start()

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()

    def in_progress(self) -> list[dict[str, Any]]:
        """The albums being fetched or imported, oldest first (for the dashboard)."""
        return [album.view() for album in self._albums.values()]

    # -- events -----------------------------------------------------------------------------

    async def _on_requested(
        self, event: album_events_pb2.AlbumRequested, envelope: envelope_pb2.EventEnvelope
    ) -> None:
        async with self._lock:
            await self._refresh()
            album = self._albums.setdefault(
                event.album_download_id, _Album(event.album_download_id)
            )
            album.artist, album.album = event.artist, event.album
            album.expected = album.expected or event.expected_tracks
            await self._save()

    async def _on_started(
        self,
        event: album_events_pb2.AlbumDownloadStarted,
        envelope: envelope_pb2.EventEnvelope,
    ) -> None:
        async with self._lock:
            await self._refresh()
            album = self._albums.setdefault(
                event.album_download_id, _Album(event.album_download_id)
            )
            album.artist, album.album = event.artist, event.album
            album.stage = "downloading"
            album.source, album.folder = event.source, event.folder
            album.expected = event.track_count
            await self._save()

    async def _on_album_failed(
        self, event: album_events_pb2.AlbumFailed, envelope: envelope_pb2.EventEnvelope
    ) -> None:
        async with self._lock:
            await self._refresh()
            album = self._albums.pop(event.album_download_id, None)
            if album is not None:
                for track in album.tracks:
                    self._owner.pop(track.download_id, None)
                await self._save()

    async def _on_completed(
        self,
        event: download_events_pb2.DownloadCompleted,
        envelope: envelope_pb2.EventEnvelope,
    ) -> None:
        album_id = envelope.attributes.get(ALBUM_ID_ATTRIBUTE, "")
        if not album_id:
            return
        async with self._lock:
            await self._refresh()
            album = self._albums.setdefault(album_id, _Album(album_id))
            album.stage = "importing"
            album.source = album.source or event.source
            album.artist = album.artist or event.track.album_artist or event.track.artist
            album.album = album.album or event.track.album
            with contextlib.suppress(ValueError):
                album.expected = int(envelope.attributes.get(ALBUM_TRACKS_ATTRIBUTE, "0"))
            if event.download_id not in self._owner:
                album.tracks.append(
                    _Track(event.download_id, event.track.title, event.track.track_number)
                )
                self._owner[event.download_id] = album_id
            await self._save()

    async def _on_ready(
        self, event: track_events_pb2.TrackReady, envelope: envelope_pb2.EventEnvelope
    ) -> None:
        await self._track_done(event.download_id, envelope, path=event.file.path)

    async def _on_run_failed(
        self,
        event: pipeline_events_pb2.PipelineRunFailed,
        envelope: envelope_pb2.EventEnvelope,
    ) -> None:
        await self._track_done(
            event.download_id, envelope, error=f"{event.capability}: {event.reason}"
        )

    async def _track_done(
        self,
        download_id: str,
        envelope: envelope_pb2.EventEnvelope,
        *,
        path: str = "",
        error: str = "",
    ) -> None:
        async with self._lock:
            await self._refresh()
            album_id = self._owner.get(download_id)
            if album_id is None:
                return
            album = self._albums[album_id]
            for track in album.tracks:
                if track.download_id == download_id:
                    track.path, track.error, track.done = path, error, True
            if len(album.tracks) < album.expected or not all(t.done for t in album.tracks):
                await self._save()
                return
            # Published before the state is dropped: a crash in between publishes it again
            # under the same event id, which the bus stores once.
            await self._finish(album, envelope)
            del self._albums[album_id]
            for track in album.tracks:
                self._owner.pop(track.download_id, None)
            await self._save()

    async def _finish(self, album: _Album, cause: envelope_pb2.EventEnvelope) -> None:
        tracks = sorted(album.tracks, key=lambda t: (t.number or 0, t.title))
        outcomes = [
            album_events_pb2.AlbumTrackOutcome(
                download_id=t.download_id, title=t.title, path=t.path, error=t.error
            )
            for t in tracks
        ]
        failed = [t for t in tracks if t.error]
        payload: album_events_pb2.AlbumReady | album_events_pb2.AlbumFailed
        if not failed:
            payload = album_events_pb2.AlbumReady(
                album_download_id=album.album_download_id,
                tracks=outcomes,
                source=album.source,
                artist=album.artist,
                album=album.album,
            )
            kind = "ready"
        else:
            imported = len(tracks) - len(failed)
            payload = album_events_pb2.AlbumFailed(
                album_download_id=album.album_download_id,
                reason=(
                    f"{len(failed)} of {len(tracks)} tracks of {album.artist} - {album.album} "
                    f"failed in the pipeline (first: {failed[0].title}: {failed[0].error}); "
                    f"the {imported} imported tracks stay in the library. What to do: fix the "
                    "cause, then fetch the missing tracks with `soulspot get`"
                ),
                tried_sources=[album.source] if album.source else [],
                partial=imported > 0,
                tracks=outcomes,
                artist=album.artist,
                album=album.album,
            )
            kind = "failed"
        _log.info(
            "album %s: %s - %s",
            kind,
            album.artist,
            album.album,
            extra={"album_download_id": album.album_download_id},
        )
        await self._publisher.publish(
            payload,
            event_id=derived_event_id(album.album_download_id, "album", kind),
            cause=cause,
            subject=album.album_download_id,
        )

    # -- state ------------------------------------------------------------------------------

    async def _save(self) -> None:
        while len(self._albums) > _MAX_ALBUMS:
            oldest = next(iter(self._albums))
            for track in self._albums.pop(oldest).tracks:
                self._owner.pop(track.download_id, None)
        await self._state.save([asdict(album) for album in self._albums.values()])

    async def _refresh(self) -> None:
        """Take the stored albums when another router (or an earlier run) wrote them."""
        data = await self._state.changed()
        if data is None:
            return
        self._albums.clear()
        self._owner.clear()
        for item in data:
            tracks = [_Track(**t) for t in item.pop("tracks", [])]
            album = _Album(**item, tracks=tracks)
            self._albums[album.album_download_id] = album
            for track in tracks:
                self._owner[track.download_id] = album.album_download_id
