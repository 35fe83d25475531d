"""Reading and atomically writing tags on generated FLAC, MP3 and WAV files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from services.kit.testing.sample_audio import write_flac, write_mp3, write_wav
from services.metadata.audio import CorruptAudio, probe, write_tags_atomically
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from pathlib import Path

AudioFormat = references_pb2.AudioFormat


def test_probe_reads_properties_and_tags_of_each_format(tmp_path: Path) -> None:
    tags = {"title": "Harbour Lights", "artist": "The Paper Lanterns", "tracknumber": "3/12"}
    flac = probe(
        write_flac(tmp_path / "a.flac", seconds=1.0, bits=24, sample_rate=96000, tags=tags)
    )
    mp3 = probe(write_mp3(tmp_path / "a.mp3", seconds=1.0, bitrate_kbps=320, tags=tags))
    wav = probe(write_wav(tmp_path / "a.wav", seconds=1.0, tags=tags))
    assert (flac.format, flac.bit_depth, flac.sample_rate_hz) == (
        AudioFormat.AUDIO_FORMAT_FLAC,
        24,
        96000,
    )
    assert flac.quality == references_pb2.QUALITY_TIER_HI_RES
    assert (mp3.format, mp3.bitrate_kbps, mp3.bit_depth) == (AudioFormat.AUDIO_FORMAT_MP3, 320, 0)
    assert mp3.quality == references_pb2.QUALITY_TIER_LOSSY_HIGH
    assert wav.format == AudioFormat.AUDIO_FORMAT_WAV
    for info in (flac, mp3, wav):
        assert info.tags["title"] == "Harbour Lights"
        assert info.tags["tracknumber"] == "3/12"
        assert 900 <= info.duration_ms <= 1100


@pytest.mark.parametrize("suffix", [".flac", ".mp3", ".wav"])
def test_written_tags_read_back_the_same(tmp_path: Path, suffix: str) -> None:
    writers: dict[str, Any] = {".flac": write_flac, ".mp3": write_mp3, ".wav": write_wav}
    writer = writers[suffix]
    path = writer(tmp_path / f"t{suffix}", seconds=0.5, tags={"title": "old"})
    changes = {
        "title": "New",
        "artist": "Ostara Vale",
        "album": "Feral Gardens",
        "albumartist": "Ostara Vale",
        "tracknumber": "5",
        "discnumber": "1",
        "date": "2023",
        "isrc": "QZSS12300045",
        "musicbrainz_trackid": "0f6c4b1e-1111-2222-3333-444455556666",
    }
    write_tags_atomically(path, changes)
    assert {k: v for k, v in probe(path).tags.items() if k in changes} == changes
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("noise.mp3", b"not audio at all " * 200),
        ("cut.flac", b"fLaC\x00\x00\x00\x22" + b"\x00" * 10),
    ],
)
def test_corrupt_audio_is_refused_and_left_alone(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorruptAudio, match=name):
        probe(path)
    with pytest.raises(CorruptAudio):
        write_tags_atomically(path, {"title": "x"})
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_failure_while_saving_leaves_the_original_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_flac(tmp_path / "t.flac", seconds=0.5, tags={"title": "keep me"})
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("services.metadata.audio.os.replace", crash)
    with pytest.raises(OSError, match="No space"):
        write_tags_atomically(path, {"title": "changed"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.flac"]
