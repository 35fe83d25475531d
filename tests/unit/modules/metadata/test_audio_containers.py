"""Probing and tagging MP4 (AAC, ALAC), Ogg Vorbis, Opus and AIFF files from real encoders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.domain.audio.probe import read_audio, track_reference
from services.kit.testing.sample_audio import write_wav
from services.metadata.audio import probe, write_tags_atomically
from soulspot.common.v1 import references_pb2
from tests.helpers.encoded_audio import ENCODINGS, decoded_seconds, encode

if TYPE_CHECKING:
    from pathlib import Path

AudioFormat = references_pb2.AudioFormat

EXPECTED = {
    # encoding: format, sample rate, bit depth (kept for lossless formats only)
    "aac": (AudioFormat.AUDIO_FORMAT_AAC, 44100, 0),
    "alac": (AudioFormat.AUDIO_FORMAT_ALAC, 44100, 24),
    "vorbis": (AudioFormat.AUDIO_FORMAT_OGG, 44100, 0),
    "opus": (AudioFormat.AUDIO_FORMAT_OPUS, 48000, 0),
    "aiff": (AudioFormat.AUDIO_FORMAT_AIFF, 44100, 16),
}

CHANGES = {
    "title": "Harbour Lights",
    "artist": "The Paper Lanterns",
    "album": "Feral Gardens",
    "albumartist": "Ostara Vale",
    "tracknumber": "3/12",
    "discnumber": "1/2",
    "date": "2023",
    "isrc": "QZSS12300045",
    "musicbrainz_trackid": "0f6c4b1e-1111-2222-3333-444455556666",
}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_probe_reads_the_properties_of_each_container(tmp_path: Path, name: str) -> None:
    info = probe(encode(tmp_path, name))
    assert (info.format, info.sample_rate_hz, info.bit_depth) == EXPECTED[name]
    assert 950 <= info.duration_ms <= 1100
    # Every file says how dense it is: from its header or, when the header leaves it
    # out (ffmpeg's Vorbis encoder does), from its size and length.
    assert info.bitrate_kbps > 0
    assert info.tags == {}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_written_tags_read_back_the_same_and_the_audio_stays(tmp_path: Path, name: str) -> None:
    path = encode(tmp_path, name)
    before = decoded_seconds(path)
    write_tags_atomically(path, CHANGES)
    assert probe(path).tags == CHANGES
    assert decoded_seconds(path) == pytest.approx(before)
    # A second write changes what it names and keeps the rest.
    write_tags_atomically(path, {"title": "Low Tide", "tracknumber": "4"})
    tags = probe(path).tags
    assert tags["title"] == "Low Tide"
    assert tags["tracknumber"] in {"4", "4/12"}
    assert tags["album"] == "Feral Gardens"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_the_kit_reader_describes_each_container_alike(tmp_path: Path, name: str) -> None:
    # services.domain.audio.probe (downloads, the library, folders) reads through mutagen's
    # "easy" interfaces; it must see the same file the metadata module wrote.
    path = encode(tmp_path, name)
    write_tags_atomically(path, CHANGES)
    facts = read_audio(path)
    fmt, rate, bits = EXPECTED[name]
    assert facts.readable
    assert (facts.format, facts.sample_rate_hz, facts.bit_depth) == (fmt, rate, bits)
    assert facts.bitrate_kbps == probe(path).bitrate_kbps > 0
    track = track_reference(facts)
    assert (track.title, track.artist, track.album) == (
        CHANGES["title"],
        CHANGES["artist"],
        CHANGES["album"],
    )
    assert (track.track_number, track.disc_number, track.year) == (3, 1, 2023)


def test_the_kit_reader_reads_the_id3_tags_of_wav_files(tmp_path: Path) -> None:
    # WAV and AIFF keep ID3 frames that mutagen's "easy" interfaces do not map.
    path = write_wav(tmp_path / "a.wav", seconds=0.5, tags={"title": "T", "tracknumber": "3/12"})
    write_tags_atomically(path, {"artist": "A", "genre": "Rock"})
    assert read_audio(path).tags == {
        "title": "T",
        "artist": "A",
        "tracknumber": "3/12",
        "genre": "Rock",
    }
