"""import.track takes files only from its import folders: a path elsewhere, a symlink, a
special file or the state folder is refused with INVALID_ARGUMENT and nothing is moved."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import write_flac
from services.library.module import SPEC
from services.library.settings import LibrarySection, LibrarySettings
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import health_status, make_bus, payloads, rpc_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SERVICE = "soulspot.capabilities.v1.LibraryService"
TRACK = references_pb2.TrackReference(title="Slow Orbit", artist="Mira Okonkwo")


class Library:
    def __init__(
        self, rt: ModuleRuntime[LibrarySection], channel: grpc.aio.Channel, bus: Any
    ) -> None:
        self.rt = rt
        self.channel = channel
        self.stub = library_pb2_grpc.LibraryServiceStub(channel)
        self.bus = bus


async def _library(tmp_path: Path, import_dirs: list[Path]) -> AsyncIterator[Library]:
    settings = LibrarySettings(
        state_dir=tmp_path / "state",
        library_root=tmp_path / "library",
        library=LibrarySection(import_dirs=import_dirs),
    )
    bus = make_bus()
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        yield Library(rt, channel, bus)


@pytest.fixture
async def library(tmp_path: Path) -> AsyncIterator[Library]:
    async for module in _library(tmp_path, [tmp_path / "downloads"]):
        yield module


def _library_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "library"
    return sorted(p for p in root.rglob("*") if not p.name.startswith(".")) if root.exists() else []


async def _refused(library: Library, path: Path, *, copy: bool) -> str:
    """The rule import.track names for `path` (it must refuse with INVALID_ARGUMENT)."""
    error = await rpc_error(
        library.stub.ImportTrack(
            library_pb2.ImportTrackRequest(
                track=TRACK, file=references_pb2.FileReference(path=str(path)), copy=copy
            ),
            timeout=5,
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    detail = error.detail(error_details_pb2.BadRequest)
    assert detail is not None
    assert [v.field for v in detail.field_violations] == ["file.path"]
    assert payloads(library.bus, "track.imported") == []
    return str(detail.field_violations[0].description)


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "move"])
async def test_a_file_outside_the_import_folders_is_neither_copied_nor_moved(
    library: Library, tmp_path: Path, copy: bool
) -> None:
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    rule = await _refused(library, secret, copy=copy)
    assert "outside the folders" in rule
    assert secret.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert _library_files(tmp_path) == []


async def test_the_state_folder_is_refused_even_inside_an_import_folder(tmp_path: Path) -> None:
    # An import folder that contains the state folder (a careless `/data`) still never
    # yields the event log.
    events_db = tmp_path / "state" / "events.db"
    events_db.parent.mkdir()
    events_db.write_bytes(b"SQLite format 3\x00 sequence 51148")
    async for library in _library(tmp_path, [tmp_path]):
        rule = await _refused(library, events_db, copy=False)
        assert "state folder" in rule
    assert events_db.read_bytes() == b"SQLite format 3\x00 sequence 51148"
    assert _library_files(tmp_path) == []


async def test_a_symlink_in_the_downloads_folder_is_refused(
    library: Library, tmp_path: Path
) -> None:
    target = write_flac(tmp_path / "elsewhere" / "real.flac", seconds=0.3)
    link = tmp_path / "downloads" / "looks-like-a-download.flac"
    link.parent.mkdir()
    link.symlink_to(target)
    rule = await _refused(library, link, copy=False)
    assert "symbolic link" in rule
    assert link.is_symlink()
    assert target.is_file()
    assert _library_files(tmp_path) == []


async def test_a_fifo_in_the_downloads_folder_is_refused(library: Library, tmp_path: Path) -> None:
    fifo = tmp_path / "downloads" / "pipe.flac"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    rule = await _refused(library, fifo, copy=True)
    assert "not a regular file" in rule
    assert _library_files(tmp_path) == []


async def test_a_file_in_the_downloads_folder_is_imported(library: Library, tmp_path: Path) -> None:
    source = write_flac(tmp_path / "downloads" / "slskd" / "a.flac", seconds=0.3)
    reply = await library.stub.ImportTrack(
        library_pb2.ImportTrackRequest(
            track=TRACK, file=references_pb2.FileReference(path=str(source))
        ),
        timeout=5,
    )
    assert reply.file.path.startswith(str((tmp_path / "library").resolve()))
    assert not source.exists()


async def test_no_import_folder_means_not_serving_and_nothing_imported(tmp_path: Path) -> None:
    source = write_flac(tmp_path / "downloads" / "a.flac", seconds=0.3)
    async for library in _library(tmp_path, []):
        status = await health_status(library.channel, SERVICE)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "IMPORT_DIRS" in library.rt.health_reason
        rule = await _refused(library, source, copy=False)
        assert "no folder is configured" in rule
    assert source.is_file()
