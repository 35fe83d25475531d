"""The folder module over a real gRPC server, on a generated sample library."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.folder.module import SPEC
from services.folder.settings import FolderSection, FolderSettings
from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as ev
from tests.helpers.module_checks import (
    event_types,
    health_status,
    make_bus,
    payloads,
    reflected_services,
    rpc_error,
    violated_fields,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVICE = "soulspot.capabilities.v1.DownloadService"
State = download_pb2.DownloadState
LIVE = {
    "artist": "The Paper Lanterns",
    "album": "Night Ferry (Live at the Docks)",
    "title": "Harbour Lights (Live)",
    "track_number": 9,
    "format": "flac",
    "seconds": 3.0,
}


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class Harness:
    def __init__(
        self, source: Path, downloads: Path, runtime: ModuleRuntime[FolderSection], bus: Any
    ) -> None:
        self.source = source
        self.downloads = downloads
        self.runtime = runtime
        self.bus = bus
        self.stub: download_pb2_grpc.DownloadServiceAsyncStub | None = None
        self.channel: grpc.aio.Channel | None = None

    async def download(
        self, track: references_pb2.TrackReference, **kwargs: Any
    ) -> download_pb2.DownloadTrackResponse:
        assert self.stub is not None
        request = download_pb2.DownloadTrackRequest(track=track, **kwargs)
        return await self.stub.DownloadTrack(request, timeout=10)


def settings_for(source: Path | None, downloads: Path) -> FolderSettings:
    return FolderSettings(
        folder=FolderSection(source_dir=source, downloads_dir=downloads, probe_interval_s=60),
        router_address="",
    )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    source = tmp_path / "source"
    downloads = tmp_path / "downloads"
    await asyncio.to_thread(make_sample_library, source, [*DEFAULT_SAMPLE_TRACKS[:6], LIVE])
    bus = make_bus()
    settings = settings_for(source, downloads)
    async with ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt:
        h = Harness(source, downloads, rt, bus)
        async with open_channel(f"127.0.0.1:{rt.port}") as channel:
            h.channel = channel
            h.stub = download_pb2_grpc.DownloadServiceStub(channel)
            yield h


async def test_match_by_tags_copies_the_file_and_leaves_the_source_alone(
    harness: Harness,
) -> None:
    before = await asyncio.to_thread(checksums, harness.source)
    # Case, punctuation and a catalogue decoration do not matter.
    track = references_pb2.TrackReference(
        title="salt AND static - Remastered 2020", artist="the paper lanterns!", duration_ms=2500
    )
    reply = await harness.download(track, requested_by="cli")
    assert reply.state == State.DOWNLOAD_STATE_COMPLETED
    assert reply.remote_filename == "The Paper Lanterns/Night Ferry/02 - Salt and Static.flac"
    path = Path(reply.file.path)
    assert path == (harness.downloads / "Night Ferry" / "02 - Salt and Static.flac").resolve()
    data = await asyncio.to_thread(path.read_bytes)
    assert reply.file.checksum == hashlib.sha256(data).hexdigest()
    assert reply.file.size_bytes == len(data)
    assert reply.file.format == references_pb2.AUDIO_FORMAT_FLAC
    assert reply.file.duration_ms == 2500
    # Nothing half-written is left behind.
    assert list((harness.downloads / ".staging").iterdir()) == []

    assert await asyncio.to_thread(checksums, harness.source) == before
    types = event_types(harness.bus)
    assert types[0] == "download.started"
    assert types[-1] == "download.completed"
    completed = payloads(harness.bus, "download.completed")[0]
    assert completed.download_id == reply.download_id
    assert completed.file.checksum == reply.file.checksum
    assert completed.requested_by == "cli"

    assert harness.stub is not None
    status = await harness.stub.GetDownload(
        download_pb2.GetDownloadRequest(download_id=reply.download_id)
    )
    assert status.state == State.DOWNLOAD_STATE_COMPLETED
    assert status.file.path == reply.file.path


async def test_isrc_identifies_the_recording(harness: Harness) -> None:
    track = references_pb2.TrackReference(
        title="Some Other Spelling", artist="Somebody", isrc="qzss12100011"
    )
    reply = await harness.download(track)
    assert reply.remote_filename.endswith("01 - Slow Orbit.mp3")


async def test_duration_outside_tolerance_is_not_a_match(harness: Harness) -> None:
    track = references_pb2.TrackReference(
        title="Slow Orbit", artist="Mira Okonkwo", duration_ms=60_000
    )
    error = await rpc_error(harness.download(track))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "duration" in error.message


async def test_live_file_only_when_asked(harness: Harness) -> None:
    plain = references_pb2.TrackReference(title="Harbour Lights", artist="The Paper Lanterns")
    reply = await harness.download(plain)
    assert reply.remote_filename.endswith("01 - Harbour Lights.flac")

    live = references_pb2.TrackReference(title="Harbour Lights (Live)", artist="The Paper Lanterns")
    reply = await harness.download(live)
    assert "Live" in reply.remote_filename


async def test_no_match_is_not_found_with_a_failed_event(harness: Harness) -> None:
    track = references_pb2.TrackReference(title="Nowhere Song", artist="Nobody At All")
    error = await rpc_error(harness.download(track))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "Nobody At All - Nowhere Song" in error.message
    failed = payloads(harness.bus, "download.failed")
    assert len(failed) == 1
    assert failed[0].kind == ev.FAILURE_KIND_NOT_FOUND
    assert failed[0].reason == error.message
    assert payloads(harness.bus, "download.completed") == []


async def test_same_track_twice_reuses_the_identical_copy(harness: Harness) -> None:
    track = references_pb2.TrackReference(title="Atlas Error", artist="Velvet Cartography")
    first = await harness.download(track)
    second = await harness.download(track)
    assert first.file.path == second.file.path
    assert first.download_id != second.download_id
    copies = list(harness.downloads.rglob("*.flac"))
    assert len(copies) == 1


async def test_missing_title_is_invalid_argument(harness: Harness) -> None:
    error = await rpc_error(harness.download(references_pb2.TrackReference(artist="Someone")))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["track.title"]
    error = await rpc_error(
        harness.stub.DownloadTrack(download_pb2.DownloadTrackRequest())  # type: ignore[union-attr]
    )
    assert violated_fields(error) == ["track"]


async def test_health_and_reflection(harness: Harness) -> None:
    assert harness.channel is not None
    assert await health_status(harness.channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert {SERVICE, "grpc.health.v1.Health"} <= await reflected_services(harness.channel)


@pytest.mark.parametrize("configured", [True, False])
async def test_missing_source_folder_is_not_serving(tmp_path: Path, configured: bool) -> None:
    source = tmp_path / "not-there" if configured else None
    settings = settings_for(source, tmp_path / "downloads")
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=make_bus(), connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        assert await health_status(channel, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        expected = "does not exist" if configured else "SOULSPOT_FOLDER__SOURCE_DIR"
        assert expected in rt.health_reason
        assert expected in ((rt.health.status(SERVICE) or (True, ""))[1] or "")
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        track = references_pb2.TrackReference(title="Atlas Error", artist="Velvet Cartography")
        error = await rpc_error(stub.DownloadTrack(download_pb2.DownloadTrackRequest(track=track)))
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert expected in error.message
