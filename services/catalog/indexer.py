"""CatalogIndexer: keeps the catalog's search index in step with the library.

Every track.imported event (durable consumer "catalog") adds or updates a row, and at start
the files already under the library root are indexed. An event whose file is not a regular
file under the library root (a path elsewhere, a symlink, the state folder) is acknowledged
and not indexed: the catalog only ever describes the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from services.catalog.index import CatalogIndex
from services.kit.events.client import EventHandlers
from services.kit.rpc.errors import InvalidArgument, Unavailable
from services.kit.security.confinement import confined_file

if TYPE_CHECKING:
    from services.catalog.settings import CatalogSection
    from services.kit.module.runtime import ModuleRuntime
    from soulspot.events.v1 import envelope_pb2, track_pb2

__all__ = ["CatalogIndexer"]

log = logging.getLogger("soulspot.catalog")


class CatalogIndexer:
    """The index, its bootstrap scan, and the track.imported handler."""

    def __init__(self, runtime: ModuleRuntime[CatalogSection], section: CatalogSection) -> None:
        self.runtime = runtime
        self.section = section
        self.library_root = Path(runtime.settings.library_root)
        self.state_dir = Path(runtime.settings.state_dir)
        self.db_path = section.db_path or Path(runtime.settings.state_dir) / "catalog" / (
            "catalog.sqlite3"
        )
        self.index: CatalogIndex | None = None
        self.problem = ""
        self.handlers = EventHandlers()
        self.handlers.on("track.imported")(self.on_track_imported)
        self._scan_task: asyncio.Task[None] | None = None
        self.scanned = asyncio.Event()

    def require_index(self) -> CatalogIndex:
        if self.index is None:
            raise Unavailable(f"catalog index unusable: {self.problem}")
        return self.index

    async def on_track_imported(
        self, payload: track_pb2.TrackImported, envelope: envelope_pb2.EventEnvelope
    ) -> None:
        index = self.require_index()  # raising nacks the delivery: it comes back later
        if payload.duplicate and payload.duplicate_of:
            path = payload.duplicate_of
        else:
            path = payload.file.path
        try:
            resolved = await asyncio.to_thread(
                confined_file,
                path,
                [self.library_root],
                field="file.path",
                forbidden=[self.state_dir],
            )
        except InvalidArgument as err:
            # Acknowledged, not retried: the same event would be refused again.
            log.warning(
                "track.imported not indexed",
                extra={"path": path, "reason": err.message, "event_id": envelope.event_id},
            )
            return
        path = str(resolved)
        await asyncio.to_thread(index.upsert, payload.track, path)
        log.info(
            "track indexed",
            extra={"path": path, "title": payload.track.title, "event_id": envelope.event_id},
        )

    async def _scan(self) -> None:
        index = self.require_index()
        try:
            read, removed = await asyncio.to_thread(index.scan, self.library_root)
            log.info(
                "library indexed",
                extra={"root": str(self.library_root), "read": read, "removed": removed},
            )
        except OSError as err:
            log.warning(
                "library scan failed", extra={"root": str(self.library_root), "error": str(err)}
            )
        finally:
            self.scanned.set()

    async def start(self) -> None:
        try:
            self.index = await asyncio.to_thread(CatalogIndex, self.db_path)
        except (OSError, Exception) as err:
            self.problem = f"cannot open {self.db_path}: {err}"
            await self.runtime.set_health(False, self.problem)
            return
        if self.section.scan_on_start:
            # In the background: the index already serves what it holds while it grows.
            self._scan_task = asyncio.create_task(self._scan(), name="catalog scan")
        else:
            self.scanned.set()

    async def stop(self) -> None:
        if self._scan_task is not None:
            self._scan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan_task
        if self.index is not None:
            await asyncio.to_thread(self.index.close)
