"""The library module as a real gRPC server: import, duplicates, lookups, health."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import write_flac, write_mp3
from services.library.module import SPEC
from services.library.settings import LibrarySection, LibrarySettings
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import (
    health_status,
    make_bus,
    payloads,
    reflected_services,
    rpc_error,
    violated_fields,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SERVICE = "soulspot.capabilities.v1.LibraryService"
Track = references_pb2.TrackReference
File = references_pb2.FileReference
TRACK = Track(
    title="Slow Orbit",
    artist="Mira Okonkwo",
    album="Copper Sky",
    year=2021,
    track_number=1,
    isrc="QZSS12100011",
)


class Module:
    def __init__(
        self, rt: ModuleRuntime[LibrarySection], channel: grpc.aio.Channel, bus: Any
    ) -> None:
        self.rt = rt
        self.channel = channel
        self.bus = bus
        self.stub = library_pb2_grpc.LibraryServiceStub(channel)


async def _module(tmp_path: Path, library_root: Path) -> AsyncIterator[Module]:
    settings = LibrarySettings(
        state_dir=tmp_path / "state",
        library_root=library_root,
        library=LibrarySection(
            path_template="{albumartist}/{album}/{track:02d} {title}.{ext}",
            import_dirs=[tmp_path / "dl"],
        ),
    )
    bus = make_bus()
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        yield Module(rt, channel, bus)


@pytest.fixture
async def module(tmp_path: Path) -> AsyncIterator[Module]:
    async for m in _module(tmp_path, tmp_path / "library"):
        yield m


async def test_import_duplicate_check_and_statistics(module: Module, tmp_path: Path) -> None:
    src = write_mp3(tmp_path / "dl" / "slow orbit.mp3", seconds=0.5, bitrate_kbps=320)
    reply = await module.stub.ImportTrack(
        library_pb2.ImportTrackRequest(
            track=TRACK,
            file=File(path=str(src), format=references_pb2.AUDIO_FORMAT_MP3, bitrate_kbps=320),
        ),
        timeout=10,
    )
    expected = tmp_path / "library" / "Mira Okonkwo" / "Copper Sky" / "01 Slow Orbit.mp3"
    assert reply.file.path == str(expected.resolve())
    assert not reply.duplicate
    assert reply.file.quality == references_pb2.QUALITY_TIER_LOSSY_HIGH
    assert expected.is_file()
    assert not src.exists()
    [event] = payloads(module.bus, "track.imported")
    assert event.file.path == reply.file.path
    assert not event.duplicate

    again = write_mp3(tmp_path / "dl" / "again.mp3", seconds=0.7, bitrate_kbps=128)
    dup = await module.stub.ImportTrack(
        library_pb2.ImportTrackRequest(track=TRACK, file=File(path=str(again))), timeout=10
    )
    assert (dup.duplicate, dup.duplicate_match) == (True, "isrc")
    assert dup.file.path == reply.file.path
    assert again.exists()
    assert payloads(module.bus, "track.imported")[-1].duplicate_of == reply.file.path

    check = await module.stub.CheckDownloaded(
        library_pb2.CheckDownloadedRequest(track=Track(title="slow orbit", artist="mira okonkwo")),
        timeout=5,
    )
    assert (check.downloaded, check.match) == (True, "title_artist")
    absent = await module.stub.CheckDownloaded(
        library_pb2.CheckDownloadedRequest(track=Track(title="Glass Tide", artist="Mira Okonkwo")),
        timeout=5,
    )
    assert not absent.downloaded
    stats = await module.stub.GetLibraryStatistics(
        library_pb2.GetLibraryStatisticsRequest(), timeout=5
    )
    assert (stats.tracks, stats.artists, stats.albums) == (1, 1, 1)
    assert stats.duplicates_refused == 1
    assert stats.total_bytes == expected.stat().st_size
    assert dict(stats.by_quality) == {"QUALITY_TIER_LOSSY_HIGH": 1}


async def test_bad_requests(module: Module, tmp_path: Path) -> None:
    missing = await rpc_error(
        module.stub.ImportTrack(
            library_pb2.ImportTrackRequest(track=Track(title="T"), file=File()), timeout=5
        )
    )
    assert missing.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(violated_fields(missing)) == ["file.path", "track.artist"]
    gone = await rpc_error(
        module.stub.ImportTrack(
            library_pb2.ImportTrackRequest(
                track=TRACK, file=File(path=str(tmp_path / "dl" / "x.mp3"))
            ),
            timeout=5,
        )
    )
    assert gone.code == grpc.StatusCode.NOT_FOUND
    assert payloads(module.bus, "track.imported") == []


async def test_health_and_reflection(module: Module) -> None:
    assert await health_status(module.channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE in await reflected_services(module.channel)


async def test_not_serving_when_the_library_root_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "library"
    blocker.write_bytes(b"a file where the library folder should be")
    async for module in _module(tmp_path, blocker):
        status = await health_status(module.channel, SERVICE)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "not writable" in module.rt.health_reason
        src = write_flac(tmp_path / "dl" / "a.flac", seconds=0.3)
        before = src.read_bytes()
        error = await rpc_error(
            module.stub.ImportTrack(
                library_pb2.ImportTrackRequest(track=TRACK, file=File(path=str(src))), timeout=5
            )
        )
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert src.read_bytes() == before
