"""Importing into the library: placement, duplicates, collisions, and failures that lose nothing."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from services.kit.rpc.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from services.kit.testing.sample_audio import write_flac, write_mp3
from services.library import placement
from services.library.importer import Importer
from services.library.library_store import LibraryStore
from services.library.naming import DEFAULT_TEMPLATE
from soulspot.common.v1 import references_pb2

Track = references_pb2.TrackReference
File = references_pb2.FileReference

TRACK = Track(
    title="Harbour Lights",
    artist="The Paper Lanterns",
    album="Night Ferry",
    year=2019,
    track_number=1,
    isrc="QZSS11900001",
    spotify_id="4uLU6hMCjMI75M1A2tKUQC",
)
EXPECTED = "The Paper Lanterns/Night Ferry (2019)/01 - Harbour Lights.flac"


def library_files(importer: Importer) -> list[str]:
    root = importer.root
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def source(tmp_path: Path, name: str = "download.flac", tone: float = 440.0) -> Path:
    return write_flac(tmp_path / "downloads" / name, seconds=0.3, tone_hz=tone)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_import_moves_the_file_into_the_template(importer: Importer, tmp_path: Path) -> None:
    src = source(tmp_path)
    checksum = digest(src)
    result = await importer.import_track(TRACK, File(path=str(src)))
    assert not result.duplicate
    assert result.file.path == str(importer.root.resolve() / EXPECTED)
    assert result.file.checksum == checksum
    assert result.file.file_id
    assert result.track.track_id
    assert result.file.format == references_pb2.AUDIO_FORMAT_FLAC
    assert not src.exists()
    assert digest(importer.root / EXPECTED) == checksum
    for probe in (
        Track(isrc="qzss11900001"),
        Track(spotify_id=TRACK.spotify_id),
        Track(title="harbour lights (feat. Someone)", artist="THE PAPER LANTERNS"),
    ):
        check = await importer.check(probe)
        assert check.downloaded
        assert check.file is not None
        assert check.file.path == result.file.path
    assert not (await importer.check(Track(title="Harbour Lights - Live", artist="x"))).downloaded
    stats = await importer.statistics()
    assert (stats.tracks, stats.artists, stats.albums) == (1, 1, 1)
    assert stats.by_quality == {"QUALITY_TIER_LOSSLESS": 1}


async def test_copy_leaves_the_source(importer: Importer, tmp_path: Path) -> None:
    src = source(tmp_path)
    result = await importer.import_track(TRACK, File(path=str(src)), copy=True)
    assert src.exists()
    assert digest(src) == result.file.checksum
    assert library_files(importer) == [EXPECTED]


async def test_duplicates_by_checksum_and_isrc_keep_the_new_file_where_it_was(
    importer: Importer, tmp_path: Path
) -> None:
    first = await importer.import_track(TRACK, File(path=str(source(tmp_path, "a.flac"))))
    again = source(tmp_path, "b.flac")  # the same bytes under another name
    dup = await importer.import_track(Track(title="Other", artist="Name"), File(path=str(again)))
    assert (dup.duplicate, dup.duplicate_match) == (True, "checksum")
    assert dup.file.path == first.file.path
    assert again.exists()
    other_bytes = source(tmp_path, "c.flac", tone=880.0)
    by_isrc = await importer.import_track(TRACK, File(path=str(other_bytes)))
    assert (by_isrc.duplicate, by_isrc.duplicate_match) == (True, "isrc")
    assert other_bytes.exists()
    mb_track = Track(title="X", artist="Y", musicbrainz_id="MB-1")
    await importer.import_track(mb_track, File(path=str(source(tmp_path, "d.flac", tone=300.0))))
    by_mb = await importer.import_track(
        Track(title="Z", artist="W", musicbrainz_id="mb-1"),
        File(path=str(source(tmp_path, "e.flac", tone=310.0))),
    )
    assert by_mb.duplicate_match == "musicbrainz_id"
    assert library_files(importer) == sorted([EXPECTED, "Y/Unknown Album/X.flac"])
    assert (await importer.statistics()).duplicates_refused == 3


async def test_a_different_file_with_the_same_name_gets_a_suffix(
    importer: Importer, tmp_path: Path
) -> None:
    squatter = importer.root / EXPECTED
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"someone else's file")
    result = await importer.import_track(TRACK, File(path=str(source(tmp_path))))
    assert result.file.path.endswith("01 - Harbour Lights (2).flac")
    assert squatter.read_bytes() == b"someone else's file"


async def test_a_file_deleted_by_hand_can_be_imported_again(
    importer: Importer, tmp_path: Path
) -> None:
    first = await importer.import_track(TRACK, File(path=str(source(tmp_path, "a.flac"))))
    os.unlink(first.file.path)
    assert not (await importer.check(Track(isrc=TRACK.isrc))).downloaded
    second = await importer.import_track(TRACK, File(path=str(source(tmp_path, "b.flac"))))
    assert not second.duplicate
    assert library_files(importer) == [EXPECTED]


async def test_a_deleted_files_name_can_be_taken_by_another_recording(
    importer: Importer, tmp_path: Path
) -> None:
    first = await importer.import_track(TRACK, File(path=str(source(tmp_path, "a.flac"))))
    os.unlink(first.file.path)
    other = Track(title=TRACK.title, artist=TRACK.artist, album=TRACK.album, year=2019)
    other.track_number = 1
    result = await importer.import_track(
        other, File(path=str(source(tmp_path, "b.flac", tone=660.0)))
    )
    assert not result.duplicate
    assert result.file.path == first.file.path
    assert (await importer.statistics()).tracks == 1


async def test_bad_sources_get_the_right_errors(importer: Importer, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await importer.import_track(TRACK, File(path=str(tmp_path / "downloads" / "nope.flac")))
    with pytest.raises(InvalidArgument):
        await importer.import_track(TRACK, File(path="relative.flac"))
    with pytest.raises(InvalidArgument):
        await importer.import_track(TRACK, File(path=str(tmp_path)))


async def test_a_symlink_leading_out_of_the_root_is_refused(
    importer: Importer, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    importer.root.mkdir()
    (importer.root / "The Paper Lanterns").symlink_to(outside)
    src = source(tmp_path)
    with pytest.raises(FailedPrecondition, match="outside the library root"):
        await importer.import_track(TRACK, File(path=str(src)))
    assert src.exists()
    assert list(outside.rglob("*.flac")) == []


def test_an_unwritable_root_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "library"
    blocker.write_bytes(b"a file where the library folder should be")
    store = LibraryStore(tmp_path / "c.sqlite3")
    try:
        reason = Importer(store, blocker, DEFAULT_TEMPLATE, import_dirs=[]).check_writable()
    finally:
        store.close()
    assert reason is not None
    assert "not writable" in reason


# -- failures half way: nothing lost, nothing truncated, nothing left behind ----------------


@pytest.mark.parametrize("cross_device", [False, True], ids=["same-fs", "cross-fs"])
async def test_store_failure_after_placing_loses_nothing(
    importer: Importer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cross_device: bool
) -> None:
    if cross_device:
        monkeypatch.setattr(placement, "same_filesystem", lambda a, b: False)
    src = source(tmp_path)
    before = src.read_bytes()

    def broken_insert(*args: object) -> None:
        raise OSError(errno.EIO, "disk I/O error")

    monkeypatch.setattr(importer.store, "insert", broken_insert)
    with pytest.raises(Internal, match="nothing was moved"):
        await importer.import_track(TRACK, File(path=str(src)))
    assert src.read_bytes() == before
    assert library_files(importer) == []
    monkeypatch.undo()
    result = await importer.import_track(TRACK, File(path=str(src)))  # a retry then works
    assert digest(importer.root / EXPECTED) == result.file.checksum
    assert not src.exists()


@pytest.mark.parametrize("cross_device", [False, True], ids=["same-fs", "cross-fs"])
async def test_a_failing_rename_loses_nothing(
    importer: Importer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cross_device: bool
) -> None:
    if cross_device:
        monkeypatch.setattr(placement, "same_filesystem", lambda a, b: False)
    src = write_mp3(tmp_path / "downloads" / "x.mp3", seconds=0.3)
    before = src.read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("services.library.placement.os.link", broken)
    monkeypatch.setattr("services.library.placement.os.rename", broken)
    with pytest.raises(FailedPrecondition, match="cannot place"):
        await importer.import_track(Track(title="T", artist="A"), File(path=str(src)))
    monkeypatch.undo()
    assert src.read_bytes() == before
    assert library_files(importer) == []
    assert (await importer.statistics()).tracks == 0


async def test_a_crash_during_the_copy_leaves_no_partial_file(
    importer: Importer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement, "same_filesystem", lambda a, b: False)
    src = source(tmp_path)
    before = src.read_bytes()

    def half_copy(a: object, b: object, *args: object, **kwargs: object) -> None:
        with open(b, "wb") as handle:  # type: ignore[call-overload]
            handle.write(before[: len(before) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("services.library.placement.shutil.copyfile", half_copy)
    with pytest.raises(FailedPrecondition, match="no space"):
        await importer.import_track(TRACK, File(path=str(src)))
    monkeypatch.undo()
    assert src.read_bytes() == before
    assert library_files(importer) == []


async def test_two_mounts_of_one_device_are_crossed_by_copying(
    importer: Importer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Container volumes and bind mounts: st_dev is the same, yet link and rename between
    # the downloads mount and the library mount fail with EXDEV.
    src = source(tmp_path)
    checksum = digest(src)
    real_link, real_rename = os.link, os.rename
    downloads = src.parent

    def across_mounts(real: Any) -> Any:
        def call(a: str | Path, b: str | Path, *args: object, **kwargs: object) -> None:
            if Path(a).parent == downloads:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            real(a, b, *args, **kwargs)

        return call

    monkeypatch.setattr("services.library.placement.os.link", across_mounts(real_link))
    monkeypatch.setattr("services.library.placement.os.rename", across_mounts(real_rename))
    result = await importer.import_track(TRACK, File(path=str(src)))
    monkeypatch.undo()
    assert result.file.path == str(importer.root.resolve() / EXPECTED)
    assert digest(importer.root / EXPECTED) == checksum
    assert not src.exists()  # a move: the source goes once the store holds the copy
    assert library_files(importer) == [EXPECTED]
