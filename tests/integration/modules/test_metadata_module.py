"""The metadata module as a real gRPC server: enrich, read, errors, health, reflection."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import write_flac, write_mp3
from services.metadata.audio import probe
from services.metadata.module import SPEC
from services.metadata.settings import MetadataSection, MetadataSettings
from soulspot.capabilities.v1 import metadata_pb2, metadata_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import (
    health_status,
    make_bus,
    payloads,
    reflected_services,
    rpc_error,
    violated_fields,
)
from tests.standins.musicbrainz import MusicBrainzStandin, StandinRecording

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

SERVICE = "soulspot.capabilities.v1.MetadataService"
MBID = "5b0e6f0a-0000-4000-8000-0000000000aa"
Track = references_pb2.TrackReference
File = references_pb2.FileReference


@pytest.fixture
def musicbrainz() -> Iterator[MusicBrainzStandin]:
    standin = MusicBrainzStandin(
        [StandinRecording(MBID, "Slow Orbit", "Mira Okonkwo", "Copper Sky", "2021", 1)]
    )
    standin.start()
    yield standin
    standin.stop()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


class Module:
    def __init__(
        self, rt: ModuleRuntime[MetadataSection], channel: grpc.aio.Channel, bus: Any
    ) -> None:
        self.rt = rt
        self.channel = channel
        self.bus = bus
        self.stub = metadata_pb2_grpc.MetadataServiceStub(channel)


async def _module(tmp_path: Path, musicbrainz_url: str, **section: Any) -> AsyncIterator[Module]:
    settings = MetadataSettings(
        state_dir=tmp_path / "state",
        library_root=tmp_path / "library",
        metadata=MetadataSection(
            musicbrainz_url=musicbrainz_url,
            user_agent="SoulSpotTests/0.1 ( tests )",
            **{"tag_dirs": [tmp_path], **section},
        ),
    )
    bus = make_bus()
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        yield Module(rt, channel, bus)


@pytest.fixture
async def module(tmp_path: Path, musicbrainz: MusicBrainzStandin) -> AsyncIterator[Module]:
    async for m in _module(tmp_path, musicbrainz.base_url):
        yield m


async def test_enrich_matches_musicbrainz_writes_tags_and_publishes(
    module: Module, tmp_path: Path
) -> None:
    path = write_mp3(tmp_path / "in.mp3", seconds=0.5, bitrate_kbps=320, tags={"title": "x"})
    reply = await module.stub.EnrichMetadata(
        metadata_pb2.EnrichMetadataRequest(
            track=Track(title="Slow Orbit", artist="Mira Okonkwo", spotify_id="sp1"),
            file=File(path=str(path)),
        ),
        timeout=10,
    )
    assert reply.musicbrainz_matched
    assert reply.lookup_skipped_reason == ""
    assert reply.track.musicbrainz_id == MBID
    assert reply.track.spotify_id == "sp1"
    assert reply.track.album == "Copper Sky"
    assert reply.file.format == references_pb2.AUDIO_FORMAT_MP3
    assert reply.file.bitrate_kbps == 320
    assert reply.file.quality == references_pb2.QUALITY_TIER_LOSSY_HIGH
    assert reply.file.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {"title", "artist", "album", "musicbrainz_trackid"} <= set(reply.changed_tags)
    tags = probe(path).tags
    assert (tags["title"], tags["album"], tags["musicbrainz_trackid"]) == (
        "Slow Orbit",
        "Copper Sky",
        MBID,
    )
    [event] = payloads(module.bus, "metadata.enriched")
    assert event.track.musicbrainz_id == MBID
    assert event.file.checksum == reply.file.checksum


async def test_read_tags_changes_nothing(module: Module, tmp_path: Path) -> None:
    path = write_flac(tmp_path / "a.flac", seconds=0.5, tags={"title": "Moss", "artist": "Ostara"})
    before = path.read_bytes()
    reply = await module.stub.ReadTags(
        metadata_pb2.ReadTagsRequest(file=File(path=str(path))), timeout=5
    )
    assert (reply.track.title, reply.track.artist) == ("Moss", "Ostara")
    assert reply.file.format == references_pb2.AUDIO_FORMAT_FLAC
    assert reply.file.bit_depth == 16
    assert path.read_bytes() == before


async def test_errors_have_the_right_status(module: Module, tmp_path: Path) -> None:
    missing = await rpc_error(
        module.stub.EnrichMetadata(metadata_pb2.EnrichMetadataRequest(), timeout=5)
    )
    assert missing.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(missing) == ["file"]
    no_path = await rpc_error(
        module.stub.EnrichMetadata(metadata_pb2.EnrichMetadataRequest(file=File()), timeout=5)
    )
    assert violated_fields(no_path) == ["file.path"]
    gone = await rpc_error(
        module.stub.ReadTags(
            metadata_pb2.ReadTagsRequest(file=File(path=str(tmp_path / "gone.flac"))), timeout=5
        )
    )
    assert gone.code == grpc.StatusCode.NOT_FOUND
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"this is a text file, not audio\n" * 100)
    before = corrupt.read_bytes()
    bad = await rpc_error(
        module.stub.EnrichMetadata(
            metadata_pb2.EnrichMetadataRequest(
                track=Track(title="T", artist="A"), file=File(path=str(corrupt))
            ),
            timeout=5,
        )
    )
    assert bad.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "corrupt.mp3" in bad.message
    assert "unchanged" in bad.message
    assert corrupt.read_bytes() == before
    assert _files(tmp_path) == ["corrupt.mp3"]
    assert payloads(module.bus, "metadata.enriched") == []


async def test_unreachable_musicbrainz_is_skipped_not_failed(tmp_path: Path) -> None:
    async for module in _module(tmp_path, "http://127.0.0.1:9"):
        path = write_flac(tmp_path / "a.flac", seconds=0.5)
        reply = await module.stub.EnrichMetadata(
            metadata_pb2.EnrichMetadataRequest(
                track=Track(title="T", artist="A"), file=File(path=str(path))
            ),
            timeout=10,
        )
        assert not reply.musicbrainz_matched
        assert "unreachable" in reply.lookup_skipped_reason
        assert probe(path).tags["title"] == "T"


async def test_offline_setting_skips_the_lookup(
    tmp_path: Path, musicbrainz: MusicBrainzStandin
) -> None:
    async for module in _module(tmp_path, musicbrainz.base_url, offline=True):
        path = write_flac(tmp_path / "a.flac", seconds=0.5)
        reply = await module.stub.EnrichMetadata(
            metadata_pb2.EnrichMetadataRequest(
                track=Track(title="Slow Orbit", artist="Mira Okonkwo"), file=File(path=str(path))
            ),
            timeout=5,
        )
        assert "SOULSPOT_METADATA__OFFLINE" in reply.lookup_skipped_reason
        assert musicbrainz.requests == []


async def test_health_and_reflection(module: Module) -> None:
    assert await health_status(module.channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE in await reflected_services(module.channel)
    assert "MusicBrainz" in module.rt.health_reason
