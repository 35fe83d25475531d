"""Read-only look at an audio file: format, properties, common tags, checksum.

What a downloader or an indexer needs to describe a file it found (a FileReference and a
TrackReference), with mutagen's "easy" tag interfaces so MP3, FLAC, Ogg and MP4 read alike.
Never writes to the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mutagen

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
    "sha256_file",
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
_CHUNK = 1 << 20


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


def _first(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value).strip()


def _number(text: str) -> int:
    # "3/12" (track of total) and "2019-05-01" (a date) both start with the number wanted.
    head = text.split("/", 1)[0].split("-", 1)[0].strip()
    return int(head) if head.isdigit() else 0


def read_audio(path: Path) -> AudioFacts:
    """Properties and common tags (title, artist, album, albumartist, isrc, tracknumber,
    discnumber, date, genre) of an audio file; `readable=False` when it cannot be parsed."""
    size = path.stat().st_size
    fmt = format_for_suffix(path.name)
    try:
        # mutagen.File is unannotated; its result is used dynamically.
        audio: Any = mutagen.File(str(path), easy=True)
    except (mutagen.MutagenError, EOFError, ValueError, IndexError, KeyError, OverflowError):
        audio = None
    if audio is None:
        return AudioFacts(path=path, format=fmt, size_bytes=size, readable=False)
    info = audio.info
    tags: dict[str, str] = {}
    if audio.tags is not None:
        for key in (
            "title",
            "artist",
            "album",
            "albumartist",
            "isrc",
            "tracknumber",
            "discnumber",
            "date",
            "genre",
        ):
            try:
                value = audio.tags.get(key)
            except (KeyError, ValueError):
                value = None
            if value:
                tags[key] = _first(value)
    codec = str(getattr(info, "codec", ""))
    if codec == "alac":
        fmt = AudioFormat.AUDIO_FORMAT_ALAC
    bits = int(getattr(info, "bits_per_sample", 0) or 0)
    return AudioFacts(
        path=path,
        format=fmt,
        size_bytes=size,
        duration_ms=round(float(getattr(info, "length", 0.0) or 0.0) * 1000),
        bitrate_kbps=round(int(getattr(info, "bitrate", 0) or 0) / 1000),
        sample_rate_hz=int(getattr(info, "sample_rate", 0) or 0),
        bit_depth=bits if fmt in _LOSSLESS else 0,
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
