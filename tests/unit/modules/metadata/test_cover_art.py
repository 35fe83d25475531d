"""Front covers: embedded in every container the module tags, fetched from the Cover Art
Archive (its stand-in) by the matched release, and never a reason for enrichment to fail."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import mutagen
import pytest
from mutagen import flac as _flac
from mutagen import id3 as _id3
from mutagen import mp4 as _mp4
from pydantic import ValidationError

from services.kit.testing.sample_audio import write_flac, write_mp3, write_wav
from services.metadata.audio import CoverImage, probe, write_tags_atomically
from services.metadata.cover_art import CoverArtClient, image_mime
from services.metadata.enrich import Enricher
from services.metadata.musicbrainz_api import MusicBrainzClient
from services.metadata.settings import MetadataSection
from soulspot.common.v1 import references_pb2
from tests.helpers.encoded_audio import ENCODINGS, encode
from tests.standins.coverart import CoverArtStandin, png_image

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from tests.standins.musicbrainz import MusicBrainzStandin

Track = references_pb2.TrackReference
File = references_pb2.FileReference
AGENT = "SoulSpotTests/0.1 ( tests )"
# The recording the `musicbrainz` fixture (conftest.py) knows.
MBID = "9a1c2b3d-0000-4000-8000-000000000001"
RELEASE = f"rel-{MBID}"  # the release the MusicBrainz stand-in lists for the recording
PNG = png_image(8, 8)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64) + b"\xff\xd9"
# mutagen's tag classes are unannotated: used through Any, as the module's own code does.
flac: Any = _flac
id3: Any = _id3
mp4: Any = _mp4
HARBOUR = Track(title="Harbour Lights", artist="The Paper Lanterns", isrc="QZSS11900001")


def _written(tmp_path: Path, name: str) -> Path:
    if name == "mp3":
        return write_mp3(tmp_path / "t.mp3", seconds=0.5)
    if name == "flac":
        return write_flac(tmp_path / "t.flac", seconds=0.5)
    if name == "wav":
        return write_wav(tmp_path / "t.wav", seconds=0.5)
    return encode(tmp_path, name)


def _picture(path: Path) -> tuple[bytes, str] | None:
    """The front cover as mutagen reads it from each container, with its MIME type."""
    audio: Any = mutagen.File(str(path))
    if isinstance(audio, flac.FLAC):
        pictures = [(p.data, p.mime) for p in audio.pictures if p.type == 3]
        return pictures[0] if pictures else None
    tags = audio.tags
    if isinstance(tags, id3.ID3):
        frames = [(f.data, f.mime) for f in tags.getall("APIC") if f.type == 3]
        return frames[0] if frames else None
    if isinstance(tags, mp4.MP4Tags):
        covers = tags.get("covr") or []
        if not covers:
            return None
        png = covers[0].imageformat == mp4.MP4Cover.FORMAT_PNG
        return bytes(covers[0]), "image/png" if png else "image/jpeg"
    for value in tags.get("metadata_block_picture") or []:
        picture = flac.Picture(base64.b64decode(value))
        if picture.type == 3:
            return picture.data, picture.mime
    return None


@pytest.mark.parametrize("name", ["mp3", "flac", "wav", *sorted(ENCODINGS)])
@pytest.mark.parametrize(("image", "mime"), [(PNG, "image/png"), (JPEG, "image/jpeg")])
def test_each_format_carries_the_embedded_front_cover(
    tmp_path: Path, name: str, image: bytes, mime: str
) -> None:
    path = _written(tmp_path, name)
    write_tags_atomically(path, {"title": "Harbour Lights"}, CoverImage(image, mime))
    assert _picture(path) == (image, mime)
    info = probe(path)
    assert info.has_front_cover
    assert info.tags["title"] == "Harbour Lights"
    # A second cover replaces the first rather than adding another front cover.
    write_tags_atomically(path, {}, CoverImage(PNG, "image/png"))
    assert _picture(path) == (PNG, "image/png")


def test_images_are_known_by_their_magic_bytes() -> None:
    assert image_mime(PNG) == "image/png"
    assert image_mime(JPEG) == "image/jpeg"
    assert image_mime(b"<html>not an image</html>") is None
    assert image_mime(b"") is None


def test_the_size_bound_is_a_bounded_setting() -> None:
    assert MetadataSection().cover_art_max_bytes == 4 * 1024 * 1024
    with pytest.raises(ValidationError):
        MetadataSection(cover_art_max_bytes=11 * 1024 * 1024)
    with pytest.raises(ValidationError):
        MetadataSection(cover_art_max_bytes=0)
    with pytest.raises(ValidationError):
        MetadataSection(cover_art_size="front-9000")  # type: ignore[arg-type]


@pytest.fixture
def archive() -> Iterator[CoverArtStandin]:
    standin = CoverArtStandin({RELEASE: PNG})
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
async def mb_client(musicbrainz: MusicBrainzStandin) -> AsyncIterator[MusicBrainzClient]:
    async with MusicBrainzClient(
        musicbrainz.base_url, user_agent=AGENT, min_interval_s=0
    ) as client:
        yield client


async def _enrich(
    tmp_path: Path, mb_client: MusicBrainzClient, archive_url: str, *, max_bytes: int = 1 << 20
) -> tuple[Path, Any]:
    path = write_flac(tmp_path / "t.flac", seconds=0.5)
    async with CoverArtClient(archive_url, user_agent=AGENT, max_bytes=max_bytes) as covers:
        enricher = Enricher(mb_client, offline=False, roots=[tmp_path], covers=covers)
        outcome = await enricher.enrich(HARBOUR, File(path=str(path)))
    return path, outcome


async def test_the_matched_release_s_front_cover_is_embedded(
    tmp_path: Path, mb_client: MusicBrainzClient, archive: CoverArtStandin
) -> None:
    path, outcome = await _enrich(tmp_path, mb_client, archive.base_url)
    assert outcome.cover_embedded
    assert outcome.cover_skipped_reason == ""
    assert _picture(path) == (PNG, "image/png")
    # Asked by release id, for the thumbnail, and the redirect was followed to the image.
    assert [r.path for r in archive.requests] == [
        f"/release/{RELEASE}/front-500",
        f"/images/{RELEASE}-front-500",
    ]
    # A file that has a cover keeps it: the archive is not asked again.
    async with CoverArtClient(archive.base_url, user_agent=AGENT) as covers:
        again = await Enricher(mb_client, offline=False, roots=[tmp_path], covers=covers).enrich(
            Track(title="Harbour Lights", artist="The Paper Lanterns"), File(path=str(path))
        )
    assert not again.cover_embedded
    assert again.cover_skipped_reason == "the file already has a front cover"
    assert len(archive.requests) == 2


async def test_an_unreachable_archive_leaves_the_track_ready_without_a_cover(
    tmp_path: Path, mb_client: MusicBrainzClient
) -> None:
    path, outcome = await _enrich(tmp_path, mb_client, "http://127.0.0.1:9")
    assert not outcome.cover_embedded
    assert "unreachable" in outcome.cover_skipped_reason
    assert outcome.musicbrainz_matched
    assert probe(path).tags["musicbrainz_trackid"] == MBID  # the tags are still written
    assert _picture(path) is None


async def test_a_release_without_a_cover_gets_none(
    tmp_path: Path, mb_client: MusicBrainzClient
) -> None:
    standin = CoverArtStandin({})
    standin.start()
    try:
        path, outcome = await _enrich(tmp_path, mb_client, standin.base_url)
    finally:
        standin.stop()
    assert not outcome.cover_embedded
    assert "no front cover" in outcome.cover_skipped_reason
    assert _picture(path) is None


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        (JPEG + bytes(4096), "larger than 2048 bytes"),
        (b"<html><body>maintenance</body></html>", "not a JPEG or PNG"),
    ],
)
async def test_an_oversized_or_non_image_answer_gets_no_cover(
    tmp_path: Path, mb_client: MusicBrainzClient, served: bytes, reason: str
) -> None:
    standin = CoverArtStandin({RELEASE: served})
    standin.start()
    try:
        path, outcome = await _enrich(tmp_path, mb_client, standin.base_url, max_bytes=2048)
    finally:
        standin.stop()
    assert not outcome.cover_embedded
    assert reason in outcome.cover_skipped_reason
    assert _picture(path) is None
    assert probe(path).tags["title"] == "Harbour Lights"


async def test_offline_enrichment_asks_no_archive(tmp_path: Path, archive: CoverArtStandin) -> None:
    path = write_flac(tmp_path / "t.flac", seconds=0.5)
    async with CoverArtClient(archive.base_url, user_agent=AGENT) as covers:
        outcome = await Enricher(None, offline=True, roots=[tmp_path], covers=covers).enrich(
            HARBOUR, File(path=str(path))
        )
    assert not outcome.cover_embedded
    assert outcome.cover_skipped_reason.startswith("offline")
    assert archive.requests == []
