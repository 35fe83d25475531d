"""The library module over gRPC knows a recording by its MusicBrainz id across a restart: a
second file of it is refused as a duplicate and left where it was, and a lookup finds it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import write_flac
from services.library.module import SPEC
from services.library.settings import LibrarySection, LibrarySettings
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import make_bus, payloads

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

Track = references_pb2.TrackReference
File = references_pb2.FileReference
# Given in upper case first, asked for in mixed case later: ids compare without case.
MBID = "5B11F4CE-A62D-471E-81FC-A69A8278C7DA"
MIXED_CASE = MBID[:18].lower() + MBID[18:]


async def _library(
    tmp_path: Path,
) -> AsyncIterator[tuple[library_pb2_grpc.LibraryServiceAsyncStub, Any]]:
    settings = LibrarySettings(
        state_dir=tmp_path / "state",
        library_root=tmp_path / "library",
        library=LibrarySection(
            path_template="{albumartist}/{title}.{ext}", import_dirs=[tmp_path / "dl"]
        ),
    )
    bus = make_bus()
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        stub: library_pb2_grpc.LibraryServiceAsyncStub = library_pb2_grpc.LibraryServiceStub(
            channel
        )
        yield stub, bus


def _library_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "library").rglob("*") if p.is_file())


async def test_a_recording_is_known_by_its_musicbrainz_id_after_a_restart(tmp_path: Path) -> None:
    first_src = write_flac(tmp_path / "dl" / "first.flac", seconds=0.3, tone_hz=440.0)
    async for stub, _bus in _library(tmp_path):
        first = await stub.ImportTrack(
            library_pb2.ImportTrackRequest(
                track=Track(title="Tidewater", artist="Ana Lindqvist", musicbrainz_id=MBID),
                file=File(path=str(first_src)),
            ),
            timeout=10,
        )
        assert not first.duplicate

    # Another file of the same recording (other bytes, other names, no ISRC), after a restart.
    second_src = write_flac(tmp_path / "dl" / "second.flac", seconds=0.4, tone_hz=880.0)
    before = second_src.read_bytes()
    async for stub, bus in _library(tmp_path):
        dup = await stub.ImportTrack(
            library_pb2.ImportTrackRequest(
                track=Track(
                    title="Tidewater (Remaster)", artist="A. Lindqvist", musicbrainz_id=MIXED_CASE
                ),
                file=File(path=str(second_src)),
            ),
            timeout=10,
        )
        assert (dup.duplicate, dup.duplicate_match) == (True, "musicbrainz_id")
        assert dup.file.path == first.file.path
        assert second_src.read_bytes() == before  # left where it was, untouched
        assert _library_files(tmp_path) == [
            tmp_path / "library" / "Ana Lindqvist" / "Tidewater.flac"
        ]
        [event] = payloads(bus, "track.imported")
        assert (event.duplicate, event.duplicate_of) == (True, first.file.path)

        check = await stub.CheckDownloaded(
            library_pb2.CheckDownloadedRequest(
                track=Track(
                    title="Something Else", artist="Someone Else", musicbrainz_id=MIXED_CASE
                )
            ),
            timeout=5,
        )
        assert (check.downloaded, check.match, check.file.path) == (
            True,
            "musicbrainz_id",
            first.file.path,
        )
        stats = await stub.GetLibraryStatistics(
            library_pb2.GetLibraryStatisticsRequest(), timeout=5
        )
        assert (stats.tracks, stats.duplicates_refused) == (1, 1)
