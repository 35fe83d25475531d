"""Bookkeeping every downloader shares: download records, counters, download.* events, and
the DownloadService methods that only read or cancel records.

A downloader module implements DownloadTrack itself (how it finds and fetches a file) and
gets GetDownload, CancelDownload and GetDownloadStatistics from `DownloadServicerBase`.

With a `db_path` the registry is durable (services.domain.downloads.store): records, counters
and events not yet published survive a restart, and the in-memory records are a cache of
the file (every download that has not ended, plus the most recent ended ones). After a
restart `recover()` sends the held events and hands back the downloads that were
interrupted, for the module to resume or fail. An event's envelope is built (and held) when
the event happens, and the same envelope is what goes out, however late: the router
deduplicates by event_id, so an event it stored just before a crash is not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2

from services.domain.downloads.store import DownloadStore, StoredDownload
from services.domain.matching import normalize
from services.kit.events.client import build_envelope
from services.kit.rpc.errors import FailedPrecondition, NotFound
from services.kit.support.tasks import cancel_all
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import envelope_pb2

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

    from services.domain.downloads.store import HeldEvent
    from services.kit.module.runtime import Publisher
    from soulspot.common.v1 import references_pb2

__all__ = [
    "DownloadRecord",
    "DownloadRegistry",
    "DownloadServicerBase",
    "State",
]

log = logging.getLogger("soulspot.downloads")

State = download_pb2.DownloadState
FailureKind = download_events_pb2.FailureKind
_MAX_QUEUED_PROGRESS = 100
# Ended downloads kept in memory (beyond them GetDownload reads the file).
CACHE_ENDED = 1000
_COUNTERS = ("started", "completed", "failed", "bytes_received", "candidate_retries")
_TERMINAL = frozenset(
    {
        State.DOWNLOAD_STATE_COMPLETED,
        State.DOWNLOAD_STATE_FAILED,
        State.DOWNLOAD_STATE_CANCELLED,
    }
)


@dataclass
class DownloadRecord:
    """One download's state as GetDownload reports it."""

    download_id: str
    track: references_pb2.TrackReference
    requested_by: str = ""
    state: int = State.DOWNLOAD_STATE_SEARCHING
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str = ""
    remote_filename: str = ""
    percent: float = 0.0
    file: references_pb2.FileReference | None = None
    error: str = ""
    tried_sources: list[str] = field(default_factory=list)
    # The size the source announced: what a download resumed after a restart waits for.
    expected_size: int = 0
    task: asyncio.Task[Any] | None = None
    cancel_requested: bool = False
    # Throttling of download.progress: when the last one went out, and what it said.
    last_progress_at: float | None = None
    last_progress_key: tuple[int, str] = (-1, "")

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL

    def to_response(self) -> download_pb2.GetDownloadResponse:
        started = timestamp_pb2.Timestamp()
        started.FromDatetime(self.started_at)
        response = download_pb2.GetDownloadResponse(
            download_id=self.download_id,
            track=self.track,
            state=self.state,  # type: ignore[arg-type]
            percent=self.percent,
            error=self.error,
            started_at=started,
            source=self.source,
        )
        if self.file is not None:
            response.file.CopyFrom(self.file)
        return response

    def stored(self) -> StoredDownload:
        return StoredDownload(
            download_id=self.download_id,
            track=self.track,
            requested_by=self.requested_by,
            state=self.state,
            source=self.source,
            remote_filename=self.remote_filename,
            expected_size=self.expected_size,
            percent=self.percent,
            file=self.file,
            error=self.error,
            tried_sources=list(self.tried_sources),
            started_at=self.started_at,
            terminal=self.terminal,
        )

    @classmethod
    def from_stored(cls, stored: StoredDownload) -> DownloadRecord:
        return cls(
            download_id=stored.download_id,
            track=stored.track,
            requested_by=stored.requested_by,
            state=stored.state,
            started_at=stored.started_at,
            source=stored.source,
            remote_filename=stored.remote_filename,
            percent=stored.percent,
            file=stored.file,
            error=stored.error,
            tried_sources=list(stored.tried_sources),
            expected_size=stored.expected_size,
        )


def _track_key(track: references_pb2.TrackReference) -> tuple[str, ...]:
    if track.isrc:
        return ("isrc", track.isrc.upper())
    return ("text", normalize(track.artist), normalize(track.title), normalize(track.album))


class DownloadRegistry:
    """The downloads of one module process, their counters, and their events."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        module: str,
        progress_interval_s: float = 0.5,
        db_path: Path | str | None = None,
    ) -> None:
        self.publisher = publisher
        self.module = module
        self.progress_interval_s = progress_interval_s
        self.records: dict[str, DownloadRecord] = {}
        self.started = 0
        self.completed = 0
        self.failed = 0
        self.bytes_received = 0
        self.candidate_retries = 0
        # Events go out through one ordered queue drained in the background: the download
        # work never waits for the router (the publisher holds and retries events while the
        # router is away), and the order of one download's events is kept. The second item
        # is the event's row in the store (None: not held there, e.g. progress).
        self._outbox: asyncio.Queue[tuple[envelope_pb2.EventEnvelope, int | None]] = asyncio.Queue()
        self._drainer: asyncio.Task[None] | None = None
        self.unpublished = 0
        self._store = DownloadStore(Path(db_path)) if db_path is not None else None
        self._interrupted: list[DownloadRecord] = []
        if self._store is not None:
            self._load(self._store)

    # -- durability -------------------------------------------------------------------------------

    def _load(self, store: DownloadStore) -> None:
        for stored in store.load(recent_terminal=CACHE_ENDED):
            record = DownloadRecord.from_stored(stored)
            self.records[record.download_id] = record
            if not record.terminal:
                self._interrupted.append(record)
        counters = store.counters()
        for name in _COUNTERS:
            setattr(self, name, counters.get(name, 0))
        for held in store.held():
            envelope = self._held_envelope(held)
            if envelope is None:
                store.release(held.held_id)
                continue
            self._outbox.put_nowait((envelope, held.held_id))
        if self._interrupted or not self._outbox.empty():
            log.info(
                "downloads restored",
                extra={
                    "module_name": self.module,
                    "interrupted": len(self._interrupted),
                    "held_events": self._outbox.qsize(),
                },
            )

    async def recover(self) -> list[DownloadRecord]:
        """After a restart: send the events the last run could not, and return the
        downloads it left unfinished (the module resumes or fails each of them)."""
        if not self._outbox.empty():
            self._start_drainer()
        interrupted, self._interrupted = self._interrupted, []
        return [r for r in interrupted if not r.terminal]

    def save(self, record: DownloadRecord) -> None:
        """Store a record whose fields the module changed (state, source, file name)."""
        self._persist(record)

    def _held_envelope(self, held: HeldEvent) -> envelope_pb2.EventEnvelope | None:
        """The envelope to send for a held event (None: unreadable, dropped)."""
        if held.envelope is not None:
            envelope = envelope_pb2.EventEnvelope()
            envelope.ParseFromString(held.envelope)
            return envelope
        # Held by a version that kept only the payload: its first id is unknown, so it
        # goes out under a new one.
        payload = _payload(held)
        if payload is None:
            return None
        return self._envelope(payload, held.subject)

    def _envelope(
        self, payload: Message, subject: str, attributes: dict[str, str] | None = None
    ) -> envelope_pb2.EventEnvelope:
        # Built where the event happens: the correlation id, traceparent and causation are
        # those of the work that caused it, not of whichever call started the drainer.
        return build_envelope(
            payload, source_module=self.module, subject=subject, attributes=attributes
        )

    def _persist(
        self,
        record: DownloadRecord,
        *,
        counters: bool = False,
        event: tuple[Message, envelope_pb2.EventEnvelope] | None = None,
    ) -> int | None:
        if self._store is None:
            return None
        hold = None
        if event is not None:
            payload, envelope = event
            hold = (
                payload.DESCRIPTOR.name,
                payload.SerializeToString(),
                record.download_id,
                envelope.SerializeToString(),
            )
        return self._store.save(
            record.stored(),
            counters={n: int(getattr(self, n)) for n in _COUNTERS} if counters else None,
            hold=hold,
        )

    def _trim(self) -> None:
        """Keep the ended records in memory bounded; the file still answers for them."""
        if self._store is None or len(self.records) <= CACHE_ENDED * 3 // 2:
            return
        ended = sorted(
            (r for r in self.records.values() if r.terminal and (r.task is None or r.task.done())),
            key=lambda r: r.started_at,
        )
        for record in ended[: max(0, len(ended) - CACHE_ENDED)]:
            del self.records[record.download_id]

    # -- records ----------------------------------------------------------------------------------

    def new(
        self,
        track: references_pb2.TrackReference,
        requested_by: str,
        *,
        download_id: str = "",
    ) -> DownloadRecord:
        """A new download's record; `download_id` names it (an album's track is named after
        its album, so a restart can tell it belongs to one), else a fresh id."""
        record = DownloadRecord(
            download_id=download_id or f"{self.module}-{uuid.uuid4().hex[:16]}",
            track=track,
            requested_by=requested_by,
        )
        self.records[record.download_id] = record
        self._persist(record)
        return record

    def find_active(
        self, track: references_pb2.TrackReference, requested_by: str
    ) -> DownloadRecord | None:
        """A download of the same track for the same requester that has not ended: asking
        twice (a retried call, a double click) must not fetch the file twice."""
        key = _track_key(track)
        for record in self.records.values():
            if (
                not record.terminal
                and record.requested_by == requested_by
                and _track_key(record.track) == key
            ):
                return record
        return None

    def get(self, download_id: str) -> DownloadRecord:
        record = self.records.get(download_id)
        if record is None and self._store is not None:
            stored = self._store.get(download_id)
            record = DownloadRecord.from_stored(stored) if stored is not None else None
        if record is None:
            raise NotFound(f"no download with id {download_id!r} in the {self.module} module")
        return record

    @property
    def active(self) -> int:
        return sum(1 for r in self.records.values() if not r.terminal)

    def statistics(self) -> download_pb2.GetDownloadStatisticsResponse:
        return download_pb2.GetDownloadStatisticsResponse(
            started=self.started,
            completed=self.completed,
            failed=self.failed,
            active=self.active,
            bytes_received=self.bytes_received,
            candidate_retries=self.candidate_retries,
        )

    async def cancel(self, download_id: str) -> int:
        """Cancel a download that has not finished; returns the state after it."""
        record = self.get(download_id)
        if record.terminal:
            if record.state == State.DOWNLOAD_STATE_CANCELLED:
                return record.state
            raise FailedPrecondition(
                f"download {download_id} already ended "
                f"({State.Name(record.state).removeprefix('DOWNLOAD_STATE_').lower()})"  # type: ignore[arg-type]
            )
        record.cancel_requested = True
        task = record.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not record.terminal:
            await self.fail(
                record,
                "cancelled by a caller",
                kind=FailureKind.FAILURE_KIND_CANCELLED,
                can_retry=False,
            )
        await self.flush()
        return record.state

    async def flush(self, wait_s: float = 1.0) -> bool:
        """Wait (at most `wait_s`) until every queued event is published; a request path
        calls it so its events are normally out before its answer. True when flushed."""
        try:
            await asyncio.wait_for(asyncio.shield(self._outbox.join()), wait_s)
        except TimeoutError:
            return False
        return True

    async def shutdown(self) -> None:
        """Stop every background download (the module is stopping)."""
        tasks = [r.task for r in self.records.values() if r.task is not None and not r.task.done()]
        await cancel_all(tasks)
        if tasks:
            log.warning(
                "downloads interrupted by shutdown",
                extra={"module_name": self.module, "count": len(tasks)},
            )
        if not await self.flush(2.0):
            log.error(
                "shutting down with download events not published",
                extra={"module_name": self.module, "count": self._outbox.qsize()},
            )
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        if self._store is not None:
            # Events still queued stay held in the file and go out after the next start.
            self._store.close()
            self._store = None

    # -- events ------------------------------------------------------------------------------------

    async def _publish(
        self,
        payload: Message,
        record: DownloadRecord,
        *,
        counters: bool = False,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """Store the record (with the counters and the event, in one commit) and queue the
        event for the drainer (returns at once)."""
        envelope = self._envelope(payload, record.download_id, attributes)
        if isinstance(payload, download_events_pb2.DownloadProgress):
            # Progress is superseded by the next one: not held across a restart, and never
            # allowed to pile up.
            self._persist(record, counters=counters)
            if self._outbox.qsize() > _MAX_QUEUED_PROGRESS:
                return
            held_id = None
        else:
            held_id = self._persist(record, counters=counters, event=(payload, envelope))
        self._outbox.put_nowait((envelope, held_id))
        self._start_drainer()

    def announce(self, payload: Message, subject: str) -> None:
        """Queue an event that belongs to no one download (an album's), in order with the
        download events around it. It is not held across a restart."""
        self._outbox.put_nowait((self._envelope(payload, subject), None))
        self._start_drainer()

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.module} events")

    async def _drain(self) -> None:
        while True:
            envelope, held_id = await self._outbox.get()
            try:
                await self.publisher.publish_envelope(envelope)
            except asyncio.CancelledError:
                # Shutdown: a held event stays in the file and is sent after the restart.
                raise
            except Exception:
                # The download itself is not undone by a lost event; the log says which one.
                self.unpublished += 1
                log.exception(
                    "could not publish download event",
                    extra={
                        "download_id": envelope.subject,
                        "event": envelope.event_type,
                        "event_id": envelope.event_id,
                    },
                )
                self._release(held_id)
            else:
                self._release(held_id)
            finally:
                self._outbox.task_done()

    def _release(self, held_id: int | None) -> None:
        if held_id is not None and self._store is not None:
            self._store.release(held_id)

    async def started_event(
        self, record: DownloadRecord, *, attempt: int, expected_size: int = 0
    ) -> None:
        if attempt == 1:
            self.started += 1
        else:
            self.candidate_retries += 1
        record.expected_size = expected_size
        await self._publish(
            download_events_pb2.DownloadStarted(
                download_id=record.download_id,
                track=record.track,
                source=record.source,
                remote_filename=record.remote_filename,
                expected_size_bytes=expected_size,
                requested_by=record.requested_by,
                attempt=attempt,
            ),
            record,
            counters=True,
        )

    async def progress(
        self,
        record: DownloadRecord,
        *,
        transferred: int,
        total: int,
        bytes_per_second: float = 0.0,
        state_text: str = "",
        force: bool = False,
    ) -> bool:
        """Publish download.progress at most once per progress interval, and only when the
        numbers or the state changed. Returns whether an event went out."""
        record.percent = round(100.0 * transferred / total, 2) if total else record.percent
        now = time.monotonic()
        key = (transferred, state_text)
        if key == record.last_progress_key:
            return False
        recent = (
            record.last_progress_at is not None
            and now - record.last_progress_at < self.progress_interval_s
        )
        if recent and not force:
            return False
        record.last_progress_at = now
        record.last_progress_key = key
        await self._publish(
            download_events_pb2.DownloadProgress(
                download_id=record.download_id,
                track=record.track,
                bytes_transferred=transferred,
                bytes_total=total,
                percent=record.percent,
                bytes_per_second=bytes_per_second,
                state=state_text,
            ),
            record,
        )
        return True

    async def complete(
        self,
        record: DownloadRecord,
        file: references_pb2.FileReference,
        *,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """`attributes` go on the download.completed envelope (an album track carries its
        album's id and size there)."""
        record.state = State.DOWNLOAD_STATE_COMPLETED
        record.file = file
        record.percent = 100.0
        record.error = ""
        self.completed += 1
        self.bytes_received += file.size_bytes
        log.info(
            "download completed",
            extra={"download_id": record.download_id, "path": file.path, "source": record.source},
        )
        await self._publish(
            download_events_pb2.DownloadCompleted(
                download_id=record.download_id,
                track=record.track,
                file=file,
                source=record.source,
                requested_by=record.requested_by,
            ),
            record,
            counters=True,
            attributes=attributes,
        )
        self._trim()

    async def fail(
        self,
        record: DownloadRecord,
        reason: str,
        *,
        kind: int,
        can_retry: bool,
    ) -> None:
        record.state = (
            State.DOWNLOAD_STATE_CANCELLED
            if kind == FailureKind.FAILURE_KIND_CANCELLED
            else State.DOWNLOAD_STATE_FAILED
        )
        record.error = reason
        self.failed += 1
        log.warning(
            "download failed",
            extra={
                "download_id": record.download_id,
                "reason": reason,
                "kind": FailureKind.Name(kind),  # type: ignore[arg-type]
                "tried_sources": record.tried_sources,
            },
        )
        await self._publish(
            download_events_pb2.DownloadFailed(
                download_id=record.download_id,
                track=record.track,
                reason=reason,
                can_retry=can_retry,
                attempts=len(record.tried_sources),
                tried_sources=record.tried_sources,
                kind=kind,  # type: ignore[arg-type]
                requested_by=record.requested_by,
            ),
            record,
            counters=True,
        )
        self._trim()


def _payload(held: HeldEvent) -> Message | None:
    """A held event's payload back from its bytes (None: a type this version lacks)."""
    cls = getattr(download_events_pb2, held.payload_type, None)
    if cls is None:
        log.error("dropping a held event of unknown type", extra={"event": held.payload_type})
        return None
    payload: Message = cls()
    payload.ParseFromString(held.data)
    return payload


class DownloadServicerBase(download_pb2_grpc.DownloadServiceServicer):
    """GetDownload, CancelDownload and GetDownloadStatistics over a DownloadRegistry."""

    def __init__(self, registry: DownloadRegistry) -> None:
        self.registry = registry

    async def GetDownload(
        self,
        request: download_pb2.GetDownloadRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_pb2.GetDownloadResponse:
        # NOT_FOUND (an unknown id) reaches the caller through the kit's error conversion.
        return self.registry.get(request.download_id).to_response()

    async def CancelDownload(
        self,
        request: download_pb2.CancelDownloadRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_pb2.CancelDownloadResponse:
        state = await self.registry.cancel(request.download_id)
        return download_pb2.CancelDownloadResponse(state=state)  # type: ignore[arg-type]

    async def GetDownloadStatistics(
        self,
        request: download_pb2.GetDownloadStatisticsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_pb2.GetDownloadStatisticsResponse:
        return self.registry.statistics()
