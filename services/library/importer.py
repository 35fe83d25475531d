"""import.track, library.check_downloaded and library.statistics over the library store and files.

Imports run one at a time (the lock), in a worker thread: collisions and duplicate checks then
see a library nobody else is changing, and the event loop never waits on disk I/O.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.domain.audio.probe import format_for_suffix, quality_tier
from services.domain.files import sha256_file
from services.kit.rpc.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from services.kit.security.confinement import confined_file, missing_inside
from services.library import placement
from services.library.naming import TemplateError, numbered, render_path
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from services.library.library_store import LibraryEntry, LibraryStore

__all__ = ["CheckResult", "ImportResult", "Importer", "LibraryStatistics"]

log = logging.getLogger("soulspot.library")

MAX_COLLISIONS = 99


@dataclass
class ImportResult:
    track: references_pb2.TrackReference
    file: references_pb2.FileReference
    duplicate: bool = False
    duplicate_match: str = ""


@dataclass
class CheckResult:
    downloaded: bool
    file: references_pb2.FileReference | None = None
    match: str = ""


@dataclass
class LibraryStatistics:
    tracks: int
    artists: int
    albums: int
    total_bytes: int
    duplicates_refused: int
    by_quality: dict[str, int]


def _within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


class Importer:
    def __init__(
        self,
        store: LibraryStore,
        root: Path,
        template: str,
        *,
        import_dirs: Sequence[Path],
        forbidden: Sequence[Path] = (),
    ) -> None:
        self.store = store
        self.root = root
        self.template = template
        # Where import.track may take files from, and folders it never touches (the state
        # folder with the event log and the stores) even when an import folder holds them.
        self.import_dirs = [Path(os.path.abspath(d)) for d in import_dirs]
        self.forbidden = [Path(os.path.abspath(d)) for d in forbidden]
        self.duplicates_refused = 0
        self._lock = asyncio.Lock()

    # -- health ---------------------------------------------------------------------------------

    def check_writable(self) -> str | None:
        """None when files can be created under the root, else the reason they cannot."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".soulspot-write-check-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            return f"library root {self.root} is not writable: {err.strerror or err}"
        return None

    # -- import.track ---------------------------------------------------------------------------

    async def import_track(
        self,
        track: references_pb2.TrackReference,
        file: references_pb2.FileReference,
        *,
        copy: bool = False,
    ) -> ImportResult:
        async with self._lock:
            result = await asyncio.to_thread(self._import, track, file, copy)
        if result.duplicate:
            self.duplicates_refused += 1
        return result

    def _source(self, file: references_pb2.FileReference) -> Path:
        """The resolved regular file the request names inside an import folder, or
        INVALID_ARGUMENT naming the rule it breaks (outside, a link, a special file, the
        state folder)."""
        try:
            return confined_file(
                file.path, self.import_dirs, field="file.path", forbidden=self.forbidden
            )
        except InvalidArgument:
            if missing_inside(file.path, self.import_dirs):
                # Inside and missing: an earlier attempt of this import may have moved it, and
                # NOT_FOUND is what makes the pipeline ask the library before failing the run.
                raise NotFound(f"no such file: {file.path}") from None
            raise

    def _existing(self, entries: list[LibraryEntry]) -> LibraryEntry | None:
        """The first entry whose file is still on disk; rows of files someone deleted by hand
        are dropped, so a deleted track can be imported again."""
        for entry in entries:
            if os.path.exists(entry.file.path):
                return entry
            log.info("stored row without its file removed", extra={"path": entry.file.path})
            self.store.delete(entry.file.file_id)
        return None

    def _duplicate(
        self, checksum: str, track: references_pb2.TrackReference
    ) -> tuple[LibraryEntry, str] | None:
        lookups: list[tuple[str, Callable[[], list[LibraryEntry]]]] = [
            ("checksum", lambda: self.store.by_checksum(checksum)),
            ("isrc", lambda: self.store.by_isrc(track.isrc)),
            ("musicbrainz_id", lambda: self.store.by_musicbrainz_id(track.musicbrainz_id)),
        ]
        for match, entries in lookups:
            entry = self._existing(entries())
            if entry is not None:
                return entry, match
        return None

    def _destination(self, track: references_pb2.TrackReference, source: Path) -> Path:
        try:
            relative = render_path(self.template, track, source.suffix)
        except TemplateError as err:
            raise FailedPrecondition(f"the library path template is unusable: {err}") from err
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._disk_error(err, self.root) from err
        root = self.root.resolve()
        dest = root.joinpath(*relative.parts)
        self._refuse_outside(dest, root)
        return dest

    @staticmethod
    def _refuse_outside(dest: Path, root: Path) -> None:
        # Names are sanitised and the template cannot climb out, but a symlinked folder inside
        # the root could still lead elsewhere: resolve the deepest folder that exists.
        folder = dest.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not _within(folder.resolve(), root):
            raise FailedPrecondition(f"refusing a path outside the library root {root}: {dest}")

    def _import(
        self,
        track: references_pb2.TrackReference,
        file: references_pb2.FileReference,
        copy: bool,
    ) -> ImportResult:
        source = self._source(file)
        checksum = sha256_file(source)
        found = self._duplicate(checksum, track)
        if found is not None:
            entry, match = found
            log.info(
                "duplicate refused",
                extra={"path": str(source), "existing": entry.file.path, "match": match},
            )
            return ImportResult(entry.track, entry.file, duplicate=True, duplicate_match=match)

        new_track = references_pb2.TrackReference()
        new_track.CopyFrom(track)
        new_track.track_id = track.track_id or uuid.uuid4().hex
        new_file = references_pb2.FileReference()
        new_file.CopyFrom(file)
        new_file.file_id = file.file_id or uuid.uuid4().hex
        new_file.checksum = checksum
        new_file.size_bytes = source.stat().st_size
        if not new_file.format:
            new_file.format = format_for_suffix(source.name)  # type: ignore[assignment]
        if not new_file.quality:
            new_file.quality = quality_tier(  # type: ignore[assignment]
                new_file.format, new_file.bitrate_kbps, new_file.bit_depth, new_file.sample_rate_hz
            )
        if not new_file.duration_ms:
            new_file.duration_ms = track.duration_ms

        dest = self._destination(new_track, source)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._disk_error(err, dest) from err
        self._refuse_outside(dest, self.root.resolve())
        if source.resolve() == dest.resolve():
            # Already where the template puts it (a re-import of a file the store does not hold).
            new_file.path = str(dest)
            self._commit(new_track, new_file, None)
            return ImportResult(new_track, new_file)

        placed = self._place(source, dest, checksum, copy)
        if isinstance(placed, ImportResult):
            return placed
        new_file.path = str(placed.dest)
        self._commit(new_track, new_file, placed)
        placed.finish()
        log.info(
            "track imported",
            extra={"source": str(source), "path": new_file.path, "method": placed.method},
        )
        return ImportResult(new_track, new_file)

    def _place(
        self, source: Path, dest: Path, checksum: str, copy: bool
    ) -> placement.Placement | ImportResult:
        cross_device = not placement.same_filesystem(source, dest.parent)
        candidate = dest
        for n in range(2, MAX_COLLISIONS + 2):
            if os.path.lexists(candidate):
                if candidate.is_file() and sha256_file(candidate) == checksum:
                    # The very same bytes already sit there, unrecorded: record nothing new,
                    # report the duplicate, keep the source.
                    twin = references_pb2.FileReference(
                        path=str(candidate), checksum=checksum, size_bytes=candidate.stat().st_size
                    )
                    return ImportResult(references_pb2.TrackReference(), twin, True, "checksum")
                candidate = dest.with_name(numbered(dest.name, n))
                continue
            # The name is free on disk, so a stored row still holding it is stale (its file
            # was deleted by hand): drop it, or the new row could never be committed.
            for stale in self.store.by_path(str(candidate)):
                self.store.delete(stale.file.file_id)
            try:
                return placement.place(
                    source, candidate, keep_source=copy, cross_device=cross_device
                )
            except FileExistsError:
                candidate = dest.with_name(numbered(dest.name, n))
            except OSError as err:
                raise self._disk_error(err, candidate) from err
        raise FailedPrecondition(
            f"more than {MAX_COLLISIONS} different files already want the name {dest}"
        )

    def _commit(
        self,
        track: references_pb2.TrackReference,
        file: references_pb2.FileReference,
        placed: placement.Placement | None,
    ) -> None:
        try:
            self.store.insert(track, file)
        except Exception as err:
            if placed is not None:
                try:
                    placed.undo()
                except OSError:
                    log.exception(
                        "undoing a failed import failed",
                        extra={"source": str(placed.source), "dest": str(placed.dest)},
                    )
            raise Internal(
                f"the library store could not record the import ({err}); nothing was moved, "
                f"the file is still at {placed.source if placed else file.path}"
            ) from err

    @staticmethod
    def _disk_error(err: OSError, path: Path) -> FailedPrecondition:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return FailedPrecondition(f"the library is not writable at {path}: {err.strerror}")
        if err.errno == errno.ENOSPC:
            return FailedPrecondition(f"no space left in the library at {path}")
        return FailedPrecondition(f"cannot place the file at {path}: {err}")

    # -- library.check_downloaded -----------------------------------------------------------------

    async def check(self, track: references_pb2.TrackReference) -> CheckResult:
        return await asyncio.to_thread(self._check, track)

    def _check(self, track: references_pb2.TrackReference) -> CheckResult:
        lookups: list[tuple[str, Callable[[], list[LibraryEntry]]]] = [
            ("isrc", lambda: self.store.by_isrc(track.isrc)),
            ("musicbrainz_id", lambda: self.store.by_musicbrainz_id(track.musicbrainz_id)),
            ("spotify_id", lambda: self.store.by_spotify_id(track.spotify_id)),
            ("title_artist", lambda: self.store.by_title_artist(track.title, track.artist)),
        ]
        for match, lookup in lookups:
            for entry in lookup():
                # A row whose file was deleted by hand does not count as downloaded.
                if os.path.exists(entry.file.path):
                    return CheckResult(True, entry.file, match)
        return CheckResult(False)

    # -- library.statistics -------------------------------------------------------------------

    async def statistics(self) -> LibraryStatistics:
        tracks, artists, albums, total, by_quality = await asyncio.to_thread(self.store.statistics)
        return LibraryStatistics(
            tracks, artists, albums, total, self.duplicates_refused, by_quality
        )
