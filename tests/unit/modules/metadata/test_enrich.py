"""Merging the caller's track, the file's tags and MusicBrainz, offline and online."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.kit.rpc.errors import FailedPrecondition, InvalidArgument, NotFound
from services.kit.testing.sample_audio import write_flac, write_mp3
from services.metadata.audio import probe
from services.metadata.enrich import Enricher
from services.metadata.musicbrainz_api import MusicBrainzClient
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from tests.standins.musicbrainz import MusicBrainzStandin

Track = references_pb2.TrackReference
File = references_pb2.FileReference
AGENT = "SoulSpotTests/0.1 ( tests )"


async def test_request_fields_win_over_the_files_tags(tmp_path: Path) -> None:
    path = write_mp3(
        tmp_path / "t.mp3",
        seconds=0.5,
        tags={"title": "harbour lights (1)", "artist": "paper lanterns", "date": "2019-04-05"},
    )
    enricher = Enricher(None, offline=True, roots=[tmp_path])
    outcome = await enricher.enrich(
        Track(title="Harbour Lights", artist="The Paper Lanterns", track_number=1, year=2019),
        File(path=str(path)),
    )
    tags = probe(path).tags
    assert (tags["title"], tags["artist"], tags["tracknumber"]) == (
        "Harbour Lights",
        "The Paper Lanterns",
        "1",
    )
    assert tags["date"] == "2019-04-05"  # the full date of the same year is kept
    assert set(outcome.changed_tags) == {"title", "artist", "tracknumber"}
    assert outcome.lookup_skipped_reason == "offline mode (SOULSPOT_METADATA__OFFLINE)"
    assert outcome.file.checksum
    assert outcome.file.size_bytes == path.stat().st_size
    again = await enricher.enrich(
        Track(title="Harbour Lights", artist="The Paper Lanterns"), File(path=str(path))
    )
    assert again.changed_tags == []  # idempotent: nothing left to change


async def test_musicbrainz_fills_gaps_by_isrc(
    tmp_path: Path, musicbrainz: MusicBrainzStandin
) -> None:
    path = write_flac(
        tmp_path / "t.flac",
        seconds=0.5,
        tags={"title": "Harbour Lights", "artist": "The Paper Lanterns"},
    )
    async with MusicBrainzClient(
        musicbrainz.base_url, user_agent=AGENT, min_interval_s=0
    ) as client:
        outcome = await Enricher(client, offline=False, roots=[tmp_path]).enrich(
            Track(title="Harbour Lights", artist="The Paper Lanterns", isrc="QZSS11900001"),
            File(path=str(path)),
        )
    assert outcome.musicbrainz_matched
    assert outcome.track.musicbrainz_id == "9a1c2b3d-0000-4000-8000-000000000001"
    assert (outcome.track.album, outcome.track.year) == ("Night Ferry", 2019)
    tags = probe(path).tags
    assert tags["musicbrainz_trackid"] == "9a1c2b3d-0000-4000-8000-000000000001"
    assert tags["isrc"] == "QZSS11900001"


async def test_unreachable_musicbrainz_is_skipped_with_the_reason(tmp_path: Path) -> None:
    path = write_flac(tmp_path / "t.flac", seconds=0.5)
    async with MusicBrainzClient(
        "http://127.0.0.1:9", user_agent=AGENT, min_interval_s=0
    ) as client:
        outcome = await Enricher(client, offline=False, roots=[tmp_path]).enrich(
            Track(title="T", artist="A"), File(path=str(path))
        )
    assert not outcome.musicbrainz_matched
    assert "unreachable" in outcome.lookup_skipped_reason
    assert probe(path).tags["title"] == "T"  # the tags are still written


async def test_bad_files_get_the_right_errors(tmp_path: Path) -> None:
    enricher = Enricher(None, offline=True, roots=[tmp_path])
    with pytest.raises(NotFound):
        await enricher.enrich(Track(), File(path=str(tmp_path / "missing.flac")))
    with pytest.raises(InvalidArgument):
        await enricher.enrich(Track(), File(path="relative.flac"))
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"\x00" * 4096)
    with pytest.raises(FailedPrecondition, match="left unchanged"):
        await enricher.enrich(Track(title="x", artist="y"), File(path=str(corrupt)))
    assert corrupt.read_bytes() == b"\x00" * 4096
