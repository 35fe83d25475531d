"""Read-only look at an audio file: format, properties, common tags, checksum.

What a downloader or an indexer needs to describe a file it found (a FileReference and a
TrackReference), its tags read through services.domain.audio.tags, so every container (MP3, FLAC,
Ogg, Opus, MP4, WAV, AIFF) reads alike, and as the metadata module writes them. Never writes
to the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mutagen

from services.domain.audio.tags import read_tags
from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "AUDIO_SUFFIXES",
    "AudioFacts",
    "file_reference",
    "format_for_suffix",
    "quality_tier",
    "read_audio",
    "stream_properties",
    "track_reference",
]

AudioFormat = references_pb2.AudioFormat
QualityTier = references_pb2.QualityTier

_BY_SUFFIX: dict[str, int] = {
    "mp3": AudioFormat.AUDIO_FORMAT_MP3,
    "flac": AudioFormat.AUDIO_FORMAT_FLAC,
    "ogg": AudioFormat.AUDIO_FORMAT_OGG,
    "oga": AudioFormat.AUDIO_FORMAT_OGG,
    "opus": AudioFormat.AUDIO_FORMAT_OPUS,
    "m4a": AudioFormat.AUDIO_FORMAT_AAC,
    "aac": AudioFormat.AUDIO_FORMAT_AAC,
    "mp4": AudioFormat.AUDIO_FORMAT_AAC,
    "alac": AudioFormat.AUDIO_FORMAT_ALAC,
    "wav": AudioFormat.AUDIO_FORMAT_WAV,
    "aiff": AudioFormat.AUDIO_FORMAT_AIFF,
    "aif": AudioFormat.AUDIO_FORMAT_AIFF,
}
AUDIO_SUFFIXES = frozenset(_BY_SUFFIX)
_LOSSLESS = frozenset(
    {
        AudioFormat.AUDIO_FORMAT_FLAC,
        AudioFormat.AUDIO_FORMAT_ALAC,
        AudioFormat.AUDIO_FORMAT_WAV,
        AudioFormat.AUDIO_FORMAT_AIFF,
    }
)


def format_for_suffix(name: str) -> int:
    """The AudioFormat for a file name's extension (UNSPECIFIED when unknown)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return _BY_SUFFIX.get(suffix, AudioFormat.AUDIO_FORMAT_UNSPECIFIED)


def quality_tier(fmt: int, bitrate_kbps: int, bit_depth: int, sample_rate_hz: int) -> int:
    """Lossless above CD resolution is hi-res; lossy splits at 256 kbps."""
    if fmt == AudioFormat.AUDIO_FORMAT_UNSPECIFIED:
        return QualityTier.QUALITY_TIER_UNSPECIFIED
    if fmt in _LOSSLESS:
        if bit_depth > 16 or sample_rate_hz > 48000:
            return QualityTier.QUALITY_TIER_HI_RES
        return QualityTier.QUALITY_TIER_LOSSLESS
    if bitrate_kbps >= 256:
        return QualityTier.QUALITY_TIER_LOSSY_HIGH
    return QualityTier.QUALITY_TIER_LOSSY_LOW


@dataclass
class AudioFacts:
    """What a file says about itself. Empty strings and zeros mean "not known"."""

    path: Path
    format: int
    size_bytes: int
    duration_ms: int = 0
    bitrate_kbps: int = 0
    sample_rate_hz: int = 0
    bit_depth: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    readable: bool = True  # False when mutagen could not parse the file

    def tag(self, key: str) -> str:
        return self.tags.get(key, "")


def _number(text: str) -> int:
    # "3/12" (track of total) and "2019-05-01" (a date) both start with the number wanted.
    head = text.split("/", 1)[0].split("-", 1)[0].strip()
    return int(head) if head.isdigit() else 0


def stream_properties(info: Any, fmt: int, size_bytes: int) -> tuple[int, int, int]:
    """(bitrate kbps, sample rate Hz, bit depth) of mutagen's stream info for a file of
    `fmt` and `size_bytes`, filling in what a header leaves out. Bit depth is kept for
    lossless formats only."""
    length = float(getattr(info, "length", 0.0) or 0.0)
    bitrate = int(getattr(info, "bitrate", 0) or 0)
    if bitrate <= 0 and length > 0:
        # No bitrate in the header (ffmpeg's Vorbis encoder writes a nominal 0): the
        # average over the file, which is what a quality tier needs.
        bitrate = round(size_bytes * 8 / length)
    # Opus always decodes at 48 kHz, whatever rate the encoder was fed; mutagen names none.
    if fmt == AudioFormat.AUDIO_FORMAT_OPUS:
        rate = 48000
    else:
        rate = int(getattr(info, "sample_rate", 0) or 0)
    bits = int(getattr(info, "bits_per_sample", 0) or 0)
    return round(bitrate / 1000), rate, bits if fmt in _LOSSLESS else 0


def read_audio(path: Path) -> AudioFacts:
    """Properties and common tags (title, artist, album, albumartist, isrc, tracknumber,
    discnumber, date, genre) of an audio file; `readable=False` when it cannot be parsed."""
    size = path.stat().st_size
    fmt = format_for_suffix(path.name)
    try:
        # mutagen.File is unannotated; its result is used dynamically.
        audio: Any = mutagen.File(str(path))
    except (mutagen.MutagenError, EOFError, ValueError, IndexError, KeyError, OverflowError):
        audio = None
    if audio is None:
        return AudioFacts(path=path, format=fmt, size_bytes=size, readable=False)
    info = audio.info
    tags = read_tags(audio.tags)
    codec = str(getattr(info, "codec", ""))
    if codec == "alac":
        fmt = AudioFormat.AUDIO_FORMAT_ALAC
    bitrate_kbps, sample_rate_hz, bit_depth = stream_properties(info, fmt, size)
    return AudioFacts(
        path=path,
        format=fmt,
        size_bytes=size,
        duration_ms=round(float(getattr(info, "length", 0.0) or 0.0) * 1000),
        bitrate_kbps=bitrate_kbps,
        sample_rate_hz=sample_rate_hz,
        bit_depth=bit_depth,
        tags=tags,
    )


def file_reference(facts: AudioFacts, *, checksum: str = "") -> references_pb2.FileReference:
    return references_pb2.FileReference(
        path=str(facts.path.resolve()),
        size_bytes=facts.size_bytes,
        format=facts.format,  # type: ignore[arg-type]
        checksum=checksum,
        bitrate_kbps=facts.bitrate_kbps,
        sample_rate_hz=facts.sample_rate_hz,
        bit_depth=facts.bit_depth,
        duration_ms=facts.duration_ms,
        quality=quality_tier(  # type: ignore[arg-type]
            facts.format, facts.bitrate_kbps, facts.bit_depth, facts.sample_rate_hz
        ),
    )


def track_reference(facts: AudioFacts) -> references_pb2.TrackReference:
    """The track a file's tags describe; the file name stands in for a missing title."""
    return references_pb2.TrackReference(
        title=facts.tag("title") or facts.path.stem,
        artist=facts.tag("artist"),
        album=facts.tag("album"),
        album_artist=facts.tag("albumartist"),
        isrc=facts.tag("isrc").upper(),
        duration_ms=facts.duration_ms,
        track_number=_number(facts.tag("tracknumber")),
        disc_number=_number(facts.tag("discnumber")),
        year=_number(facts.tag("date")),
        genre=facts.tag("genre"),
    )
