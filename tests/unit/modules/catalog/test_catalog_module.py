"""The catalog module over a real gRPC server: indexing from events and from the library."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.catalog.module import SPEC
from services.catalog.settings import CatalogSection, CatalogSettings
from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS, make_sample_library
from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2
from tests.helpers.module_checks import (
    health_status,
    make_bus,
    reflected_services,
    rpc_error,
    violated_fields,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from services.kit.events.client import InMemoryBus

SERVICE = "soulspot.capabilities.v1.SearchService"


class Harness:
    def __init__(
        self, runtime: ModuleRuntime[CatalogSection], bus: InMemoryBus, library: Path
    ) -> None:
        self.runtime = runtime
        self.bus = bus
        self.library = library
        self.channel: grpc.aio.Channel | None = None
        self.stub: Any = None

    async def search(self, query: str, limit: int = 0) -> list[search_pb2.SearchResult]:
        reply = await self.stub.SearchTrack(
            search_pb2.SearchTrackRequest(query=query, limit=limit), timeout=5
        )
        return list(reply.results)

    async def imported(self, title: str, artist: str, name: str, **track: Any) -> None:
        """Publish track.imported for a file `name` that the library holds (created here)."""
        path = self.library / name
        if not path.exists():
            path.write_bytes(b"imported audio")
        await self.imported_at(str(path), title, artist, **track)

    async def imported_at(self, path: str, title: str, artist: str, **track: Any) -> None:
        await self.bus.publish(
            track_pb2.TrackImported(
                track=references_pb2.TrackReference(title=title, artist=artist, **track),
                file=references_pb2.FileReference(path=path),
            )
        )
        await self.bus.drain()


async def _harness(tmp_path: Path, *, scan: bool) -> AsyncIterator[Harness]:
    library = tmp_path / "library"
    library.mkdir()
    if scan:
        await asyncio.to_thread(make_sample_library, library, DEFAULT_SAMPLE_TRACKS)
    settings = CatalogSettings(
        catalog=CatalogSection(scan_on_start=scan),
        state_dir=tmp_path / "state",
        library_root=library,
        router_address="",
    )
    bus = make_bus()
    async with ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt:
        await rt.extras["indexer"].scanned.wait()
        h = Harness(rt, bus, library)
        async with open_channel(f"127.0.0.1:{rt.port}") as channel:
            h.channel = channel
            h.stub = search_pb2_grpc.SearchServiceStub(channel)
            yield h


@pytest.fixture
async def empty(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in _harness(tmp_path, scan=False):
        yield h


@pytest.fixture
async def scanned(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in _harness(tmp_path, scan=True):
        yield h


async def test_imported_tracks_are_found_by_full_text(empty: Harness) -> None:
    assert await empty.search("harbour") == []
    await empty.imported(
        "Harbour Lights", "The Paper Lanterns", "a.flac", album="Night Ferry", track_id="t1"
    )
    await empty.imported("Harbour Lights Reprise", "The Paper Lanterns", "b.flac")
    await empty.imported("Glass Tide", "Mira Okonkwo", "c.mp3", isrc="QZSS12100014")
    assert empty.bus.failures == []

    results = await empty.search("paper lanterns harbour lights")
    assert [r.track.title for r in results] == ["Harbour Lights", "Harbour Lights Reprise"]
    best = results[0]
    assert best.source == "catalog"
    assert best.in_library
    assert best.track.track_id == "t1"
    assert best.track.album == "Night Ferry"
    assert best.score == 1.0
    assert 0 < results[1].score < best.score

    # Prefixes, case and accents do not matter.
    assert [r.track.title for r in await empty.search("GLÁSS ti")] == ["Glass Tide"]
    assert [r.track.title for r in await empty.search("qzss12100014")] == ["Glass Tide"]
    assert len(await empty.search("harbour", limit=1)) == 1


async def test_a_redelivered_import_updates_instead_of_duplicating(empty: Harness) -> None:
    await empty.imported("Atlas Error", "Velvet Cartography", "x.flac")
    await empty.imported("Atlas Error", "Velvet Cartography", "x.flac", year=2016)
    results = await empty.search("atlas error")
    assert len(results) == 1
    assert results[0].track.year == 2016


async def test_library_is_indexed_at_start(scanned: Harness) -> None:
    results = await scanned.search("Mira Okonkwo - Slow Orbit")
    assert results[0].track.title == "Slow Orbit"
    assert results[0].track.isrc == "QZSS12100011"
    assert results[0].track.duration_ms > 0
    mira = await scanned.search("okonkwo")
    assert {r.track.title for r in mira} == {"Slow Orbit", "Glass Tide"}
    # Any word is enough when no track has them all, and it scores lower.
    partial = await scanned.search("atlas nonexistentword")
    assert [r.track.title for r in partial] == ["Atlas Error"]
    assert partial[0].score < 1.0


async def test_missing_query_is_invalid_argument(empty: Harness) -> None:
    error = await rpc_error(empty.stub.SearchTrack(search_pb2.SearchTrackRequest()))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["query"]


async def test_health_and_reflection(empty: Harness) -> None:
    assert empty.channel is not None
    assert await health_status(empty.channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert {SERVICE, "grpc.health.v1.Health"} <= await reflected_services(empty.channel)


@pytest.mark.parametrize("kind", ["outside", "symlink", "fifo"])
async def test_a_track_imported_outside_the_library_is_not_indexed(
    empty: Harness, tmp_path: Path, kind: str
) -> None:
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    if kind == "outside":
        path = secret
    elif kind == "symlink":
        path = empty.library / "passwd.flac"
        path.symlink_to(secret)
    else:
        path = empty.library / "pipe.flac"
        os.mkfifo(path)
    await empty.imported_at(str(path), "Passwd", "Root")
    # Acknowledged (a redelivery would be refused the same way), and not in the index.
    assert empty.bus.failures == []
    assert await empty.search("passwd") == []
    await empty.imported("Passwd", "Root", "passwd-real.flac")
    assert [r.track.title for r in await empty.search("passwd")] == ["Passwd"]
