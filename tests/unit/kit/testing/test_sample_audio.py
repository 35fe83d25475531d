"""sample_audio files read back through mutagen, and the FLAC stream checked bit for bit."""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any

import pytest
from mutagen import flac, id3, mp3, wave

from services.kit.testing.sample_audio import (
    DEFAULT_SAMPLE_TRACKS,
    make_sample_library,
    write_flac,
    write_mp3,
    write_wav,
)

if TYPE_CHECKING:
    from pathlib import Path

# mutagen's readers are unannotated; strict mypy needs them as Any.
FLAC: Any = flac.FLAC
ID3: Any = id3.ID3
MP3: Any = mp3.MP3
WAVE: Any = wave.WAVE

TAGS = {
    "title": "Harbour Lights",
    "artist": "The Paper Lanterns",
    "album": "Night Ferry",
    "tracknumber": 1,
    "date": 2019,
    "isrc": "QZSS11900001",
}


def _crc8(data: bytes) -> int:
    # Bitwise, independent of the table-driven implementation under test.
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _decode_flac(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Walk a FLAC stream written by write_flac; returns STREAMINFO fields and the PCM."""
    assert data[:4] == b"fLaC"
    pos = 4
    info: dict[str, Any] = {}
    while True:
        header = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        block = data[pos + 4 : pos + 4 + length]
        if header & 0x7F == 0:
            packed = int.from_bytes(block[10:18], "big")
            info = {
                "rate": packed >> 44,
                "channels": ((packed >> 41) & 0x7) + 1,
                "bits": ((packed >> 36) & 0x1F) + 1,
                "total": packed & ((1 << 36) - 1),
                "md5": block[18:34],
            }
        pos += 4 + length
        if header & 0x80:
            break
    width = info["bits"] // 8
    pcm = bytearray()
    frame_number = 0
    while pos < len(data):
        assert data[pos : pos + 2] == b"\xff\xf8", f"sync at {pos}"
        assert data[pos + 2] >> 4 == 7
        assert data[pos + 3] >> 4 == info["channels"] - 1
        number_len = 1 if data[pos + 4] < 0x80 else bin(data[pos + 4]).index("0") - 2
        header_end = pos + 4 + number_len + 2
        size = struct.unpack(">H", data[header_end - 2 : header_end])[0] + 1
        assert data[header_end] == _crc8(data[pos:header_end])
        cursor = header_end + 1
        channels = []
        for _ in range(info["channels"]):
            kind = data[cursor]
            cursor += 1
            if kind == 0b0000_0000:  # CONSTANT
                value = data[cursor : cursor + width]
                channels.append([value] * size)
                cursor += width
            else:
                assert kind == 0b0000_0010  # VERBATIM
                channels.append(
                    [data[cursor + i * width : cursor + (i + 1) * width] for i in range(size)]
                )
                cursor += size * width
        footer = struct.unpack(">H", data[cursor : cursor + 2])[0]
        assert footer == _crc16(data[pos:cursor])
        for i in range(size):
            for ch in channels:
                pcm += ch[i][::-1]  # big-endian in frames, little-endian for the MD5
        pos = cursor + 2
        frame_number += 1
    return info, bytes(pcm)


@pytest.mark.parametrize(("channels", "bits", "rate"), [(2, 16, 44100), (1, 24, 48000)])
def test_flac_stream_is_valid(tmp_path: Path, channels: int, bits: int, rate: int) -> None:
    path = write_flac(
        tmp_path / "a.flac", seconds=0.25, sample_rate=rate, channels=channels, bits=bits
    )
    info, pcm = _decode_flac(path.read_bytes())
    assert info["rate"] == rate
    assert info["channels"] == channels
    assert info["bits"] == bits
    assert info["total"] == round(0.25 * rate)
    assert len(pcm) == info["total"] * channels * bits // 8
    assert hashlib.md5(pcm, usedforsecurity=False).digest() == info["md5"]


def test_flac_silence_uses_constant_subframes(tmp_path: Path) -> None:
    path = write_flac(tmp_path / "s.flac", seconds=0.2, tone_hz=0)
    _, pcm = _decode_flac(path.read_bytes())
    assert set(pcm) == {0}
    assert path.stat().st_size < 1000


def test_flac_round_trip_through_mutagen(tmp_path: Path) -> None:
    path = write_flac(tmp_path / "t.flac", seconds=2.5, tone_hz=440, tags=TAGS)
    audio = FLAC(str(path))
    assert audio.info.length == pytest.approx(2.5, abs=0.1)
    assert audio.info.sample_rate == 44100
    assert audio.info.bits_per_sample == 16
    assert audio.info.channels == 2
    assert audio["title"] == ["Harbour Lights"]
    assert audio["artist"] == ["The Paper Lanterns"]
    assert audio["tracknumber"] == ["1"]
    assert audio["isrc"] == ["QZSS11900001"]
    # Tagging moved the frames but must not have touched them.
    info, pcm = _decode_flac(path.read_bytes())
    assert hashlib.md5(pcm, usedforsecurity=False).digest() == info["md5"]


@pytest.mark.parametrize(("bitrate", "xing", "channels"), [(128, True, 2), (320, False, 1)])
def test_mp3_round_trip_through_mutagen(
    tmp_path: Path, bitrate: int, xing: bool, channels: int
) -> None:
    path = write_mp3(
        tmp_path / "t.mp3",
        seconds=3.0,
        bitrate_kbps=bitrate,
        channels=channels,
        tags=TAGS,
        xing=xing,
    )
    audio = MP3(str(path))
    assert audio.info.length == pytest.approx(3.0, abs=0.1)
    assert audio.info.bitrate == pytest.approx(bitrate * 1000, rel=0.01)
    assert audio.info.sample_rate == 44100
    assert audio.info.channels == channels
    tags = ID3(str(path))
    assert str(tags["TIT2"]) == "Harbour Lights"
    assert str(tags["TPE1"]) == "The Paper Lanterns"
    assert str(tags["TALB"]) == "Night Ferry"
    assert str(tags["TRCK"]) == "1"
    assert str(tags["TSRC"]) == "QZSS11900001"


def test_mp3_frames_are_well_formed(tmp_path: Path) -> None:
    path = write_mp3(tmp_path / "f.mp3", seconds=1.0, bitrate_kbps=128)
    data = path.read_bytes()
    syncsafe = data[6:10]  # ID3v2 tag size: four 7-bit bytes
    pos = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(syncsafe))
    frames = 0
    while pos < len(data):
        assert data[pos : pos + 2] == b"\xff\xfb"
        padding = (data[pos + 2] >> 1) & 1
        pos += 144 * 128_000 // 44100 + padding
        frames += 1
    assert pos == len(data)
    assert frames == round(44100 / 1152) + 1  # audio frames plus the Info frame


def test_wav_round_trip(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "t.wav", seconds=1.5, tags={"title": "Wave"})
    audio = WAVE(str(path))
    assert audio.info.length == pytest.approx(1.5, abs=0.01)
    assert audio.info.sample_rate == 44100
    assert str(audio.tags["TIT2"]) == "Wave"


def test_sample_library(tmp_path: Path) -> None:
    paths = make_sample_library(tmp_path, DEFAULT_SAMPLE_TRACKS)
    assert len(paths) == len(DEFAULT_SAMPLE_TRACKS) >= 8
    assert {p.suffix for p in paths} == {".flac", ".mp3"}
    first = paths[0]
    assert first.relative_to(tmp_path).as_posix() == (
        "The Paper Lanterns/Night Ferry/01 - Harbour Lights.flac"
    )
    assert FLAC(str(first))["date"] == ["2019"]
    mp3 = next(p for p in paths if p.suffix == ".mp3")
    spec = next(t for t in DEFAULT_SAMPLE_TRACKS if t["format"] == "mp3")
    assert MP3(str(mp3)).info.length == pytest.approx(spec["seconds"], abs=0.1)
    assert str(ID3(str(mp3))["TPE1"]) == spec["artist"]
