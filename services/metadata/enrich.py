"""Enrichment: read the file, merge what the caller knows, look the recording up, write tags.

Precedence for every tag: what the request's TrackReference says wins, then what the file
already says, then what MusicBrainz found (which fills gaps and always supplies the recording
id). MusicBrainz never overrides the caller or the file, because a title/artist search can
match the wrong version of a song; an ISRC match still only fills gaps.

When the match names a release and the file has no front cover, the release's front cover
from the Cover Art Archive is embedded in the same write; without one (archive unreachable,
no cover, too big, not an image) the track goes on without, and the outcome says why.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.domain.files import sha256_file
from services.kit.rpc.errors import FailedPrecondition, InvalidArgument, NotFound
from services.kit.security.confinement import confined_file, missing_inside
from services.metadata.audio import (
    AudioInfo,
    CorruptAudio,
    CoverImage,
    probe,
    write_tags_atomically,
)
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from services.metadata.cover_art import CoverArtClient
    from services.metadata.musicbrainz_api import LookupResult, MusicBrainzClient

__all__ = ["EnrichOutcome", "Enricher", "file_reference", "track_from_tags"]

log = logging.getLogger("soulspot.metadata")

TrackReference = references_pb2.TrackReference
FileReference = references_pb2.FileReference


@dataclass
class EnrichOutcome:
    track: references_pb2.TrackReference
    file: references_pb2.FileReference
    musicbrainz_matched: bool = False
    lookup_skipped_reason: str = ""
    changed_tags: list[str] = field(default_factory=list)
    cover_embedded: bool = False
    cover_skipped_reason: str = ""


@dataclass(frozen=True)
class _Lookup:
    matched: bool
    skipped_reason: str = ""
    release_mbid: str = ""


def _number(text: str) -> int:
    """3 from "3", "03" or "3/12"; 0 when there is no number."""
    head = text.split("/", 1)[0].strip()
    return int(head) if head.isdigit() else 0


def track_from_tags(tags: dict[str, str], duration_ms: int) -> references_pb2.TrackReference:
    date = tags.get("date", "")
    return TrackReference(
        title=tags.get("title", ""),
        artist=tags.get("artist", ""),
        album=tags.get("album", ""),
        album_artist=tags.get("albumartist", ""),
        isrc=tags.get("isrc", "").upper(),
        musicbrainz_id=tags.get("musicbrainz_trackid", ""),
        track_number=_number(tags.get("tracknumber", "")),
        disc_number=_number(tags.get("discnumber", "")),
        year=int(date[:4]) if date[:4].isdigit() else 0,
        genre=tags.get("genre", ""),
        duration_ms=duration_ms,
    )


def _overlay(base: references_pb2.TrackReference, top: references_pb2.TrackReference) -> None:
    """Copy every non-empty field of `top` onto `base` (proto3 scalars: empty means unset)."""
    for descriptor, value in top.ListFields():
        setattr(base, descriptor.name, value)


def file_reference(
    path: Path, info: AudioInfo, checksum: str, file_id: str = ""
) -> references_pb2.FileReference:
    return FileReference(
        file_id=file_id,
        path=str(path),
        size_bytes=path.stat().st_size,
        format=info.format,  # type: ignore[arg-type]
        checksum=checksum,
        bitrate_kbps=info.bitrate_kbps,
        sample_rate_hz=info.sample_rate_hz,
        bit_depth=info.bit_depth,
        duration_ms=info.duration_ms,
        quality=info.quality,  # type: ignore[arg-type]
    )


def _desired_tags(track: references_pb2.TrackReference, current: dict[str, str]) -> dict[str, str]:
    """The normalised tags the file should carry for `track`."""
    out: dict[str, str] = {}
    for key, value in (
        ("title", track.title),
        ("artist", track.artist),
        ("album", track.album),
        ("albumartist", track.album_artist),
        ("isrc", track.isrc),
        ("musicbrainz_trackid", track.musicbrainz_id),
        ("genre", track.genre),
    ):
        if value:
            out[key] = value
    if track.track_number:
        out["tracknumber"] = str(track.track_number)
    if track.disc_number:
        out["discnumber"] = str(track.disc_number)
    if track.year:
        date = current.get("date", "")
        # A full date ("2019-05-03") of the right year says more than the year alone: keep it.
        out["date"] = date if date[:4] == str(track.year) else str(track.year)
    return out


def _changes(desired: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    changes: dict[str, str] = {}
    for key, value in desired.items():
        old = current.get(key, "")
        if key in ("tracknumber", "discnumber"):
            # "3/12" already says track 3: rewriting it to "3" would lose the total.
            if _number(old) == _number(value):
                continue
        elif old == value:
            continue
        changes[key] = value
    return changes


class Enricher:
    def __init__(
        self,
        musicbrainz: MusicBrainzClient | None,
        *,
        offline: bool,
        roots: Sequence[Path],
        forbidden: Sequence[Path] = (),
        covers: CoverArtClient | None = None,
    ) -> None:
        self._mb = musicbrainz
        self._covers = covers
        self._offline = offline
        # The folders whose files may be read and tagged; `forbidden` (the state folder) never.
        self.roots = list(roots)
        self.forbidden = list(forbidden)

    def _audio_path(self, file: references_pb2.FileReference) -> Path:
        """The resolved regular file the request names inside an allowed folder, or
        INVALID_ARGUMENT naming the rule it breaks (NOT_FOUND when it is inside and gone)."""
        try:
            return confined_file(file.path, self.roots, field="file.path", forbidden=self.forbidden)
        except InvalidArgument:
            if missing_inside(file.path, self.roots):
                raise NotFound(f"no such file: {file.path}") from None
            raise

    async def read(self, file: references_pb2.FileReference) -> EnrichOutcome:
        path = self._audio_path(file)
        info, checksum = await asyncio.to_thread(self._probe, path)
        track = track_from_tags(info.tags, info.duration_ms)
        return EnrichOutcome(track, file_reference(path, info, checksum, file.file_id))

    @staticmethod
    def _probe(path: Path) -> tuple[AudioInfo, str]:
        try:
            info = probe(path)
        except CorruptAudio as err:
            raise FailedPrecondition(f"{err}; the file was left unchanged") from err
        return info, sha256_file(path)

    async def enrich(
        self,
        track: references_pb2.TrackReference,
        file: references_pb2.FileReference,
        *,
        offline: bool = False,
    ) -> EnrichOutcome:
        path = self._audio_path(file)
        info, _ = await asyncio.to_thread(self._probe, path)
        merged = track_from_tags(info.tags, info.duration_ms)
        _overlay(merged, track)
        lookup = await self._lookup(merged, offline=offline)
        cover, cover_reason = await self._cover(lookup, info, offline=offline)
        changes = _changes(_desired_tags(merged, info.tags), info.tags)
        if changes or cover is not None:
            try:
                await asyncio.to_thread(write_tags_atomically, path, changes, cover)
            except CorruptAudio as err:
                raise FailedPrecondition(f"{err}; the file was left unchanged") from err
            except OSError as err:
                raise FailedPrecondition(
                    f"cannot write tags to {path}: {err}; the file was left unchanged"
                ) from err
        info, checksum = await asyncio.to_thread(self._probe, path)
        if not merged.duration_ms:
            merged.duration_ms = info.duration_ms
        return EnrichOutcome(
            track=merged,
            file=file_reference(path, info, checksum, file.file_id),
            musicbrainz_matched=lookup.matched,
            lookup_skipped_reason=lookup.skipped_reason,
            changed_tags=list(changes),
            cover_embedded=cover is not None,
            cover_skipped_reason=cover_reason,
        )

    async def _cover(
        self, lookup: _Lookup, info: AudioInfo, *, offline: bool
    ) -> tuple[CoverImage | None, str]:
        """(the front cover to embed, or None and why not)."""
        if info.has_front_cover:
            return None, "the file already has a front cover"
        if self._offline or offline:
            return None, "offline: no cover art lookup"
        if self._covers is None:
            return None, "cover art is off (SOULSPOT_METADATA__COVER_ART)"
        if not lookup.release_mbid:
            return None, "no MusicBrainz release matched, so no cover art to look up"
        result = await self._covers.front(lookup.release_mbid)
        return result.image, result.reason

    async def _lookup(self, track: references_pb2.TrackReference, *, offline: bool) -> _Lookup:
        """Whether a recording matched (or why no lookup was made) and its release; fills the
        gaps of `track` from a matched recording."""
        if self._offline:
            return _Lookup(False, "offline mode (SOULSPOT_METADATA__OFFLINE)")
        if offline:
            return _Lookup(False, "offline requested by the caller")
        if self._mb is None:
            return _Lookup(False, "no MusicBrainz client configured")
        if track.musicbrainz_id:
            return _Lookup(False, "the track already carries a MusicBrainz recording id")
        if not track.isrc and not track.title:
            return _Lookup(False, "nothing to look up: no ISRC and no title")
        result: LookupResult = await self._mb.lookup(
            isrc=track.isrc or None, title=track.title or None, artist=track.artist or None
        )
        if result.status == "skipped":
            log.warning(
                "MusicBrainz lookup skipped",
                extra={"reason": result.reason, "impact": "tags not matched online"},
            )
            return _Lookup(False, result.reason)
        if result.recording is None:
            return _Lookup(False)
        recording = result.recording
        track.musicbrainz_id = recording.mbid
        if not track.title:
            track.title = recording.title
        if not track.artist:
            track.artist = recording.artist
        if not track.album and recording.album:
            track.album = recording.album
        if not track.year and recording.year:
            track.year = recording.year
        if not track.track_number and recording.track_number:
            track.track_number = recording.track_number
        return _Lookup(True, release_mbid=recording.release_mbid or "")
