"""M3U playlists in the library: order, relative paths, missing tracks, names that cannot
escape, and the whole file replaced on every write."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from services.kit.rpc.errors import FailedPrecondition, InvalidArgument
from services.kit.testing.sample_audio import write_flac
from services.library.playlists import (
    PlaylistLine,
    PlaylistWriter,
    m3u_text,
    playlist_file_name,
)
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from services.library.importer import Importer

Track = references_pb2.TrackReference

ONE = Track(
    title="Harbour Lights",
    artist="The Paper Lanterns",
    album="Night Ferry",
    year=2019,
    track_number=1,
    duration_ms=181_400,
)
TWO = Track(
    title="Salt Roads", artist="The Paper Lanterns", album="Night Ferry", year=2019, track_number=2
)
ABSENT = Track(title="Never Fetched", artist="Nobody")


async def _import(importer: Importer, tmp_path: Path, track: Track, tone: float) -> None:
    src = write_flac(tmp_path / "downloads" / f"{tone}.flac", seconds=0.3, tone_hz=tone)
    await importer.import_track(track, references_pb2.FileReference(path=str(src)))


def test_m3u_text_is_extended_m3u_with_one_line_per_field() -> None:
    text = m3u_text(
        [
            PlaylistLine("../A/B/01 - T.flac", 181, "A", "T"),
            PlaylistLine("../C/D.flac", -1, "Evil\nArtist", "#EXTINF:1,x"),
        ]
    )
    assert text == (
        "#EXTM3U\n"
        "#EXTINF:181,A - T\n../A/B/01 - T.flac\n"
        "#EXTINF:-1,Evil Artist - #EXTINF:1,x\n../C/D.flac\n"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Road Trip", "Road Trip.m3u8"),
        ("../../etc/passwd", "etc_passwd.m3u8"),
        ("AC/DC: Best", "AC_DC_ Best.m3u8"),
        ("CON", "CON_.m3u8"),
    ],
)
def test_playlist_names_become_one_file_name(name: str, expected: str) -> None:
    assert playlist_file_name(name) == expected
    assert "/" not in playlist_file_name(name)


@pytest.mark.parametrize("name", ["", "...", "  ", "/"])
def test_a_name_with_nothing_usable_is_invalid(name: str) -> None:
    with pytest.raises(InvalidArgument):
        playlist_file_name(name)


async def test_the_playlist_lists_held_tracks_in_order_relative_to_itself(
    importer: Importer, tmp_path: Path
) -> None:
    await _import(importer, tmp_path, ONE, 440.0)
    await _import(importer, tmp_path, TWO, 550.0)
    written = await PlaylistWriter(importer).write("Road Trip", [TWO, ABSENT, ONE])

    assert written.path == tmp_path / "library" / "Playlists" / "Road Trip.m3u8"
    assert written.written == 2
    assert written.missing_positions == [2]
    lines = written.path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    assert lines[1].startswith("#EXTINF:")
    assert lines[1].endswith(",The Paper Lanterns - Salt Roads")
    assert lines[2] == "../The Paper Lanterns/Night Ferry (2019)/02 - Salt Roads.flac"
    assert lines[3].endswith(",The Paper Lanterns - Harbour Lights")
    assert lines[4] == "../The Paper Lanterns/Night Ferry (2019)/01 - Harbour Lights.flac"
    for entry in (lines[2], lines[4]):
        assert (written.path.parent / entry).is_file()


async def test_a_rewrite_replaces_the_file_and_leaves_no_temporary(
    importer: Importer, tmp_path: Path
) -> None:
    writer = PlaylistWriter(importer)
    await _import(importer, tmp_path, ONE, 440.0)
    first = await writer.write("Mix", [ONE, TWO])
    assert first.missing_positions == [2]
    inode_before = first.path.stat().st_ino
    await _import(importer, tmp_path, TWO, 550.0)
    second = await writer.write("Mix", [ONE, TWO])

    assert second.written == 2
    assert second.missing_positions == []
    assert second.path.stat().st_ino != inode_before  # a new file renamed in, not rewritten
    assert os.listdir(second.path.parent) == ["Mix.m3u8"]
    assert "02 - Salt Roads.flac" in second.path.read_text(encoding="utf-8").splitlines()[-1]


async def test_a_symlinked_playlists_folder_is_refused(importer: Importer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    importer.root.mkdir(parents=True)
    (importer.root / "Playlists").symlink_to(elsewhere)
    with pytest.raises(FailedPrecondition, match="symbolic link"):
        await PlaylistWriter(importer).write("Mix", [ONE])
    assert list(elsewhere.iterdir()) == []


async def test_too_many_tracks_is_invalid(importer: Importer) -> None:
    with pytest.raises(InvalidArgument, match="more than a playlist may hold"):
        await PlaylistWriter(importer).write("Big", [ONE] * 20_001)
