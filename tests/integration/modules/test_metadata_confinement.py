"""enrich.metadata and metadata.read act only on regular files in the downloads folders and
the library root: anything else is refused with INVALID_ARGUMENT and left unchanged."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2

from services.kit.module.runtime import ModuleRuntime
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import write_flac
from services.metadata.module import SPEC
from services.metadata.settings import MetadataSection, MetadataSettings
from soulspot.capabilities.v1 import metadata_pb2, metadata_pb2_grpc
from soulspot.common.v1 import references_pb2
from tests.helpers.module_checks import make_bus, payloads, rpc_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

TRACK = references_pb2.TrackReference(title="Rewritten", artist="Someone Else")


async def _stub(tmp_path: Path, tag_dirs: list[Path]) -> AsyncIterator[tuple[Any, Any]]:
    settings = MetadataSettings(
        state_dir=tmp_path / "state",
        library_root=tmp_path / "library",
        metadata=MetadataSection(offline=True, tag_dirs=tag_dirs),
    )
    bus = make_bus()
    async with (
        ModuleRuntime(SPEC, settings, port=0, publisher=bus, connect_router=False) as rt,
        open_channel(f"127.0.0.1:{rt.port}") as channel,
    ):
        yield metadata_pb2_grpc.MetadataServiceStub(channel), bus


@pytest.fixture
async def metadata(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    async for pair in _stub(tmp_path, [tmp_path / "downloads"]):
        yield pair


def _enrich(stub: Any, path: Path) -> Any:
    return stub.EnrichMetadata(
        metadata_pb2.EnrichMetadataRequest(
            track=TRACK, file=references_pb2.FileReference(path=str(path))
        ),
        timeout=5,
    )


async def _refused(call: Any) -> str:
    error = await rpc_error(call)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    detail = error.detail(error_details_pb2.BadRequest)
    assert detail is not None
    assert [v.field for v in detail.field_violations] == ["file.path"]
    return str(detail.field_violations[0].description)


async def test_a_file_outside_every_root_keeps_its_tags(
    metadata: tuple[Any, Any], tmp_path: Path
) -> None:
    stub, bus = metadata
    outside = write_flac(tmp_path / "music" / "mine.flac", seconds=0.3, tags={"title": "Mine"})
    before = outside.read_bytes()
    rule = await _refused(_enrich(stub, outside))
    assert "outside the folders" in rule
    assert outside.read_bytes() == before
    assert payloads(bus, "metadata.enriched") == []


async def test_a_symlink_in_the_downloads_folder_is_not_followed(
    metadata: tuple[Any, Any], tmp_path: Path
) -> None:
    stub, _bus = metadata
    target = write_flac(tmp_path / "music" / "mine.flac", seconds=0.3, tags={"title": "Mine"})
    before = target.read_bytes()
    link = tmp_path / "downloads" / "download.flac"
    link.parent.mkdir()
    link.symlink_to(target)
    rule = await _refused(_enrich(stub, link))
    assert "symbolic link" in rule
    assert target.read_bytes() == before


async def test_a_fifo_is_refused_without_being_opened(
    metadata: tuple[Any, Any], tmp_path: Path
) -> None:
    stub, _bus = metadata
    fifo = tmp_path / "downloads" / "pipe.flac"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    read = stub.ReadTags(
        metadata_pb2.ReadTagsRequest(file=references_pb2.FileReference(path=str(fifo))),
        timeout=5,
    )
    assert "not a regular file" in await _refused(read)


async def test_the_state_folder_is_refused_inside_a_tag_folder(tmp_path: Path) -> None:
    inside_state = write_flac(tmp_path / "state" / "kept.flac", seconds=0.3, tags={"title": "K"})
    before = inside_state.read_bytes()
    async for stub, _bus in _stub(tmp_path, [tmp_path]):
        assert "state folder" in await _refused(_enrich(stub, inside_state))
    assert inside_state.read_bytes() == before


async def test_downloads_and_the_library_root_are_tagged(
    metadata: tuple[Any, Any], tmp_path: Path
) -> None:
    stub, _bus = metadata
    for folder in ("downloads", "library"):
        path = write_flac(tmp_path / folder / "a.flac", seconds=0.3, tags={"title": "Old"})
        reply = await _enrich(stub, path)
        assert "title" in reply.changed_tags
        assert reply.track.title == "Rewritten"
