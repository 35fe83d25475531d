"""Generate short, tagged audio files without any external encoder.

The offline demo and the tests need real audio files (FLAC, MP3, WAV) that tag readers accept,
but no encoder binary (flac, lame, ffmpeg) may be assumed. So this module writes the container
formats itself, in pure Python:

* FLAC: STREAMINFO (with the MD5 of the samples), then frames holding VERBATIM subframes (or
  CONSTANT ones for silence), each with its CRC-8 header check and CRC-16 footer.
* MP3: MPEG-1 Layer III frames whose side information is all zero, which every decoder plays as
  silence, led by a Xing "Info" frame so readers get the exact length.
* WAV: the stdlib ``wave`` module.

mutagen is used only to write tags (Vorbis comments, ID3v2).
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import sys
import wave
from array import array
from pathlib import Path
from typing import Any

from mutagen import flac as _flac
from mutagen import id3 as _id3
from mutagen import wave as _wave

# mutagen ships py.typed but leaves these constructors unannotated, which strict mypy rejects
# at every call; they are used through Any instead.
FLAC: Any = _flac.FLAC
WAVE: Any = _wave.WAVE
id3: Any = _id3

__all__ = [
    "DEFAULT_SAMPLE_TRACKS",
    "make_sample_library",
    "sample_filename",
    "write_flac",
    "write_mp3",
    "write_wav",
]

# ---------------------------------------------------------------------------------------------
# PCM synthesis


def _tone(
    seconds: float, sample_rate: int, channels: int, bits: int, tone_hz: float
) -> list[array[int]]:
    """One signed integer sample array per channel: a sine at a third of full scale.

    The right channel is a fifth above the left so a stereo file is not trivially mono.
    """
    frames = round(seconds * sample_rate)
    full_scale = (1 << (bits - 1)) - 1
    amplitude = full_scale / 3 if tone_hz > 0 else 0.0
    typecode = "b" if bits == 8 else ("h" if bits == 16 else "i")
    out: list[array[int]] = []
    for ch in range(channels):
        freq = tone_hz * (1.5 if ch % 2 else 1.0)
        step = 2 * math.pi * freq / sample_rate
        out.append(array(typecode, (round(amplitude * math.sin(step * n)) for n in range(frames))))
    return out


def _interleaved_le(channels: list[array[int]], bits: int) -> bytes:
    """Samples interleaved, signed little-endian, bits/8 bytes each: FLAC's MD5 input."""
    nframes = len(channels[0])
    width = bits // 8
    if bits == 24:
        buf = bytearray()
        for i in range(nframes):
            for ch in channels:
                buf += (ch[i] & 0xFFFFFF).to_bytes(3, "little")
        return bytes(buf)
    inter = array(channels[0].typecode, bytes(nframes * len(channels) * width))
    for c, ch in enumerate(channels):
        inter[c :: len(channels)] = ch
    if sys.byteorder == "big":
        inter.byteswap()
    return inter.tobytes()


# ---------------------------------------------------------------------------------------------
# FLAC


def _crc8_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC8 = _crc8_table()
_CRC16 = _crc16_table()


def _crc8(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = _CRC8[crc ^ b]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ b]
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's "UTF-8" coding of the frame number (extended to 36 bits, 7 bytes)."""
    if n < 0x80:
        return bytes([n])
    for nbytes in range(2, 8):
        if n < 1 << (5 * nbytes + 1):
            break
    lead = (0xFF << (8 - nbytes)) & 0xFF
    out = [lead | (n >> (6 * (nbytes - 1)))]
    for i in range(nbytes - 2, -1, -1):
        out.append(0x80 | ((n >> (6 * i)) & 0x3F))
    return bytes(out)


# Header codes for rates FLAC can name directly; anything else is read from STREAMINFO (0).
_FLAC_RATE_CODES = {88200: 1, 176400: 2, 192000: 3, 8000: 4, 16000: 5, 22050: 6, 24000: 7}
_FLAC_RATE_CODES |= {32000: 8, 44100: 9, 48000: 10, 96000: 11}
_FLAC_BITS_CODES = {8: 1, 12: 2, 16: 4, 20: 5, 24: 6}
_FLAC_BLOCK = 4096


def _flac_frame(number: int, block: list[array[int]], sample_rate: int, bits: int) -> bytes:
    size = len(block[0])
    header = bytearray(b"\xff\xf8")  # sync code, fixed-blocksize stream
    # Block-size code 7: the exact size follows as 16-bit (size-1), which also covers the last,
    # shorter block without special cases.
    header.append((7 << 4) | _FLAC_RATE_CODES.get(sample_rate, 0))
    header.append(((len(block) - 1) << 4) | (_FLAC_BITS_CODES[bits] << 1))
    header += _utf8_number(number)
    header += struct.pack(">H", size - 1)
    header.append(_crc8(bytes(header)))
    body = bytearray(header)
    width = bits // 8
    for ch in block:
        if all(s == 0 for s in ch):
            # CONSTANT subframe: one sample value stands for the whole block.
            body.append(0b0000_0000)
            body += (0).to_bytes(width, "big")
            continue
        body.append(0b0000_0010)  # VERBATIM, no wasted bits
        if bits == 8:
            body += bytes(s & 0xFF for s in ch)
        elif bits == 16:
            samples = array("h", ch)
            if sys.byteorder == "little":
                samples.byteswap()
            body += samples.tobytes()
        else:
            for s in ch:
                body += (s & 0xFFFFFF).to_bytes(3, "big")
    # Every subframe is a whole number of bytes, so the frame is already byte aligned.
    body += struct.pack(">H", _crc16(bytes(body)))
    return bytes(body)


def write_flac(
    path: str | Path,
    *,
    seconds: float,
    sample_rate: int = 44100,
    channels: int = 2,
    bits: int = 16,
    tone_hz: float = 440.0,
    tags: dict[str, Any] | None = None,
) -> Path:
    """Write a valid FLAC file holding a sine tone (``tone_hz=0`` for silence) and tags."""
    if bits not in (8, 16, 24):
        raise ValueError("bits must be 8, 16 or 24")
    if not 1 <= channels <= 8:
        raise ValueError("channels must be 1..8")
    target = Path(path)
    pcm = _tone(seconds, sample_rate, channels, bits, tone_hz)
    total = len(pcm[0])
    if total < 16:
        raise ValueError("FLAC needs at least 16 samples per channel")
    frames = []
    for number, start in enumerate(range(0, total, _FLAC_BLOCK)):
        block = [ch[start : start + _FLAC_BLOCK] for ch in pcm]
        frames.append(_flac_frame(number, block, sample_rate, bits))
    blocksize = min(_FLAC_BLOCK, total)
    md5 = hashlib.md5(_interleaved_le(pcm, bits), usedforsecurity=False).digest()
    info = struct.pack(">HH", blocksize, blocksize)
    info += min(len(f) for f in frames).to_bytes(3, "big")
    info += max(len(f) for f in frames).to_bytes(3, "big")
    packed = (sample_rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total
    info += packed.to_bytes(8, "big") + md5
    # Block header: last-metadata-block flag set, type 0 (STREAMINFO), 34 bytes.
    streaminfo = bytes([0x80]) + len(info).to_bytes(3, "big") + info
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"fLaC" + streaminfo + b"".join(frames))
    if tags:
        audio = FLAC(str(target))
        for key, value in tags.items():
            audio[key.lower()] = [str(v) for v in value] if isinstance(value, list) else str(value)
        audio.save()
    return target


# ---------------------------------------------------------------------------------------------
# MP3

_MP3_BITRATES = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_RATES = {44100: 0, 48000: 1, 32000: 2}
_MP3_SAMPLES_PER_FRAME = 1152

# ID3v2 frames for the tag names the project uses; anything else goes to a TXXX frame.
_ID3_FRAMES: dict[str, Any] = {
    "title": id3.TIT2,
    "artist": id3.TPE1,
    "album": id3.TALB,
    "albumartist": id3.TPE2,
    "tracknumber": id3.TRCK,
    "discnumber": id3.TPOS,
    "date": id3.TDRC,
    "genre": id3.TCON,
    "isrc": id3.TSRC,
}


def _mp3_header(bitrate_index: int, rate_index: int, padding: int, mono: bool) -> bytes:
    # 0xFFFB: sync, MPEG-1, Layer III, no CRC. Channel mode 11 is mono, 00 plain stereo.
    mode = 0b11 if mono else 0b00
    return bytes([0xFF, 0xFB, (bitrate_index << 4) | (rate_index << 2) | (padding << 1), mode << 6])


def write_mp3(
    path: str | Path,
    *,
    seconds: float,
    bitrate_kbps: int = 128,
    sample_rate: int = 44100,
    channels: int = 2,
    tags: dict[str, Any] | None = None,
    xing: bool = True,
) -> Path:
    """Write a valid, silent MPEG-1 Layer III file of ``seconds`` length with ID3v2 tags.

    The frames carry zeroed side information, which decodes to silence; a proper encoder is
    out of reach without external tools and silence is enough for tags, lengths and bitrates.
    """
    if bitrate_kbps not in _MP3_BITRATES[1:]:
        raise ValueError(f"bitrate must be one of {_MP3_BITRATES[1:]}")
    if sample_rate not in _MP3_RATES:
        raise ValueError("MPEG-1 sample rate must be 32000, 44100 or 48000")
    if channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    target = Path(path)
    br_index = _MP3_BITRATES.index(bitrate_kbps)
    rate_index = _MP3_RATES[sample_rate]
    mono = channels == 1
    side_info = 17 if mono else 32
    nframes = max(1, round(seconds * sample_rate / _MP3_SAMPLES_PER_FRAME))
    # 144 * bitrate / rate bytes per frame; the fractional part is spread with padding bytes
    # the way encoders do, so the average bitrate is exact.
    numerator = 144 * bitrate_kbps * 1000
    frames: list[bytes] = []
    remainder = 0
    for _ in range(nframes + (1 if xing else 0)):
        remainder += numerator % sample_rate
        padding = 1 if remainder >= sample_rate else 0
        remainder -= sample_rate * padding
        length = numerator // sample_rate + padding
        header = _mp3_header(br_index, rate_index, padding, mono)
        frames.append(header + bytes(length - 4))
    if xing:
        audio_bytes = sum(len(f) for f in frames)
        # "Info" marks a CBR stream; flags: frame count and byte count present. The frame
        # count excludes this frame; the byte count includes it (as LAME writes them).
        info = b"Info" + struct.pack(">III", 0x3, nframes, audio_bytes)
        first = bytearray(frames[0])
        first[4 + side_info : 4 + side_info + len(info)] = info
        frames[0] = bytes(first)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(frames))
    tag = id3.ID3()
    for key, value in (tags or {}).items():
        text = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        frame_cls = _ID3_FRAMES.get(key.lower())
        if frame_cls is None:
            tag.add(id3.TXXX(encoding=3, desc=key, text=text))
        else:
            tag.add(frame_cls(encoding=3, text=text))
    tag.save(str(target), v2_version=4)
    return target


# ---------------------------------------------------------------------------------------------
# WAV


def write_wav(
    path: str | Path,
    *,
    seconds: float,
    sample_rate: int = 44100,
    channels: int = 2,
    bits: int = 16,
    tone_hz: float = 440.0,
    tags: dict[str, Any] | None = None,
) -> Path:
    """Write a PCM WAV file with the stdlib ``wave`` module (ID3 chunk for tags, if any)."""
    if bits not in (8, 16, 24):
        raise ValueError("bits must be 8, 16 or 24")
    target = Path(path)
    pcm = _tone(seconds, sample_rate, channels, bits, tone_hz)
    data = _interleaved_le(pcm, bits)
    if bits == 8:
        # 8-bit WAV samples are unsigned.
        data = bytes((b + 128) & 0xFF for b in data)
    target.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(target), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(bits // 8)
        out.setframerate(sample_rate)
        out.writeframes(data)
    if tags:
        audio = WAVE(str(target))
        audio.add_tags()
        for key, value in tags.items():
            text = [str(value)]
            frame_cls = _ID3_FRAMES.get(key.lower())
            if frame_cls is None:
                audio.tags.add(id3.TXXX(encoding=3, desc=key, text=text))
            else:
                audio.tags.add(frame_cls(encoding=3, text=text))
        audio.save()
    return target


# ---------------------------------------------------------------------------------------------
# Sample library

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip().rstrip(".") or "_"


def sample_filename(track: dict[str, Any]) -> str:
    """Relative path for a sample track: ``Artist/Album/NN - Title.ext``."""
    fmt = str(track.get("format", "flac")).lower()
    number = int(track.get("track_number", 1))
    return (
        f"{_safe(str(track['artist']))}/{_safe(str(track.get('album', 'Singles')))}/"
        f"{number:02d} - {_safe(str(track['title']))}.{fmt}"
    )


def _tags_for(track: dict[str, Any]) -> dict[str, Any]:
    tags: dict[str, Any] = {
        "title": track["title"],
        "artist": track["artist"],
        "album": track.get("album", "Singles"),
        "albumartist": track.get("albumartist", track["artist"]),
        "tracknumber": int(track.get("track_number", 1)),
    }
    for key in ("date", "genre", "isrc", "discnumber"):
        if track.get(key) is not None:
            tags[key] = track[key]
    if "year" in track and "date" not in track:
        tags["date"] = track["year"]
    return tags


def make_sample_library(folder: str | Path, tracks: list[dict[str, Any]]) -> list[Path]:
    """Create tagged audio files under ``folder`` as ``Artist/Album/NN - Title.ext``.

    Each track dict needs ``title`` and ``artist``; optional: ``album``, ``track_number``,
    ``year``/``date``, ``genre``, ``isrc``, ``format`` (flac, mp3, wav), ``seconds``,
    ``tone_hz``, ``bitrate_kbps`` (mp3). Returns the written paths in order.
    """
    root = Path(folder)
    written = []
    for index, track in enumerate(tracks):
        target = root / sample_filename(track)
        seconds = float(track.get("seconds", 2.0))
        tags = _tags_for(track)
        fmt = str(track.get("format", "flac")).lower()
        tone = float(track.get("tone_hz", 220.0 + 55.0 * index))
        if fmt == "flac":
            write_flac(target, seconds=seconds, tone_hz=tone, tags=tags)
        elif fmt == "mp3":
            bitrate = int(track.get("bitrate_kbps", 192))
            write_mp3(target, seconds=seconds, bitrate_kbps=bitrate, tags=tags)
        elif fmt == "wav":
            write_wav(target, seconds=seconds, tone_hz=tone, tags=tags)
        else:
            raise ValueError(f"unsupported sample format {fmt!r}")
        written.append(target)
    return written


# Invented artists and titles, so the demo library carries no real catalogue data.
DEFAULT_SAMPLE_TRACKS: list[dict[str, Any]] = [
    {
        "artist": "The Paper Lanterns",
        "album": "Night Ferry",
        "title": "Harbour Lights",
        "track_number": 1,
        "year": 2019,
        "genre": "Indie",
        "format": "flac",
        "seconds": 3.0,
        "isrc": "QZSS11900001",
    },
    {
        "artist": "The Paper Lanterns",
        "album": "Night Ferry",
        "title": "Salt and Static",
        "track_number": 2,
        "year": 2019,
        "genre": "Indie",
        "format": "flac",
        "seconds": 2.5,
        "isrc": "QZSS11900002",
    },
    {
        "artist": "Mira Okonkwo",
        "album": "Copper Sky",
        "title": "Slow Orbit",
        "track_number": 1,
        "year": 2021,
        "genre": "Electronic",
        "format": "mp3",
        "seconds": 3.0,
        "bitrate_kbps": 320,
        "isrc": "QZSS12100011",
    },
    {
        "artist": "Mira Okonkwo",
        "album": "Copper Sky",
        "title": "Glass Tide",
        "track_number": 4,
        "year": 2021,
        "genre": "Electronic",
        "format": "mp3",
        "seconds": 2.0,
        "bitrate_kbps": 256,
        "isrc": "QZSS12100014",
    },
    {
        "artist": "Velvet Cartography",
        "album": "Maps of Nowhere",
        "title": "Atlas Error",
        "track_number": 3,
        "year": 2016,
        "genre": "Rock",
        "format": "flac",
        "seconds": 2.0,
        "isrc": "QZSS11600023",
    },
    {
        "artist": "Velvet Cartography",
        "album": "Maps of Nowhere",
        "title": "Compass Rose",
        "track_number": 7,
        "year": 2016,
        "genre": "Rock",
        "format": "mp3",
        "seconds": 2.5,
        "bitrate_kbps": 192,
        "isrc": "QZSS11600027",
    },
    {
        "artist": "Juniper Hall Quartet",
        "album": "Winter Rooms",
        "title": "Second Snow",
        "track_number": 2,
        "year": 2012,
        "genre": "Jazz",
        "format": "flac",
        "seconds": 3.0,
        "isrc": "QZSS11200032",
    },
    {
        "artist": "Ostara Vale",
        "album": "Feral Gardens",
        "title": "Moss Cathedral",
        "track_number": 5,
        "year": 2023,
        "genre": "Folk",
        "format": "mp3",
        "seconds": 2.0,
        "bitrate_kbps": 128,
        "isrc": "QZSS12300045",
    },
]
