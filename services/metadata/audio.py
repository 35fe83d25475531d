"""Read and write an audio file's tags and properties with mutagen, one spelling for all formats.

Tag names are normalised to lower-case keys (title, artist, album, albumartist, tracknumber,
discnumber, date, isrc, musicbrainz_trackid, genre) whatever the container stores: ID3 frames
(MP3, WAV, AIFF), Vorbis comments (FLAC, Ogg Vorbis, Opus) or MP4 atoms.

Writing never touches the original until the new bytes are complete: the file is copied to a
temporary file in the same folder, tagged, re-read, fsynced and renamed over the original, so a
crash at any point leaves either the old file or the new one, never a truncated one. A front
cover picture, when given, is embedded in the same write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mutagen
from mutagen import aiff, flac, mp3, oggopus, oggvorbis, wave
from mutagen import id3 as _id3
from mutagen import mp4 as _mp4

from services.domain.audio.probe import quality_tier, stream_properties
from services.domain.audio.tags import TAG_KEYS, front_cover, read_tags, set_front_cover, set_tag
from services.domain.files import fsync_dir, fsync_file
from soulspot.common.v1 import references_pb2

__all__ = [
    "TAG_KEYS",
    "AudioInfo",
    "CorruptAudio",
    "CoverImage",
    "probe",
    "write_tags_atomically",
]

AudioFormat = references_pb2.AudioFormat


# mutagen ships py.typed but leaves the tag classes' methods unannotated, which strict mypy
# rejects at every call; the tag modules are used through Any instead.
id3: Any = _id3
mp4: Any = _mp4


class CorruptAudio(Exception):
    """The file is not audio mutagen can read, or not a format the module handles."""


@dataclass
class AudioInfo:
    """What a file says about itself: properties and normalised tags."""

    format: int
    duration_ms: int
    bitrate_kbps: int
    sample_rate_hz: int
    bit_depth: int
    tags: dict[str, str] = field(default_factory=dict)
    has_front_cover: bool = False

    @property
    def quality(self) -> int:
        return quality_tier(self.format, self.bitrate_kbps, self.bit_depth, self.sample_rate_hz)


# ---------------------------------------------------------------------------------------------
# Opening


def _open(path: Path) -> Any:
    """The mutagen object for the file, or CorruptAudio with a message a user can act on."""
    try:
        # mutagen's File is unannotated; the object is used dynamically below.
        audio: Any = mutagen.File(str(path))
    except mutagen.MutagenError as err:
        raise CorruptAudio(f"{path.name}: not readable audio ({err})") from err
    except (EOFError, ValueError, IndexError, KeyError, OverflowError) as err:
        # mutagen lets some low-level parse errors of damaged files through as these.
        raise CorruptAudio(f"{path.name}: damaged audio ({type(err).__name__}: {err})") from err
    if audio is None:
        raise CorruptAudio(f"{path.name}: not a recognised audio format")
    return audio


def _format_of(audio: Any) -> int:
    if isinstance(audio, mp3.MP3):
        return AudioFormat.AUDIO_FORMAT_MP3
    if isinstance(audio, flac.FLAC):
        return AudioFormat.AUDIO_FORMAT_FLAC
    if isinstance(audio, oggopus.OggOpus):
        return AudioFormat.AUDIO_FORMAT_OPUS
    if isinstance(audio, oggvorbis.OggVorbis):
        return AudioFormat.AUDIO_FORMAT_OGG
    if isinstance(audio, mp4.MP4):
        codec = str(getattr(audio.info, "codec", ""))
        return AudioFormat.AUDIO_FORMAT_ALAC if codec == "alac" else AudioFormat.AUDIO_FORMAT_AAC
    if isinstance(audio, wave.WAVE):
        return AudioFormat.AUDIO_FORMAT_WAV
    if isinstance(audio, aiff.AIFF):
        return AudioFormat.AUDIO_FORMAT_AIFF
    return AudioFormat.AUDIO_FORMAT_UNSPECIFIED


def _loaded(path: Path) -> tuple[Any, int]:
    audio = _open(path)
    fmt = _format_of(audio)
    if fmt == AudioFormat.AUDIO_FORMAT_UNSPECIFIED:
        raise CorruptAudio(
            f"{path.name}: unsupported audio format {type(audio).__name__} "
            "(supported: MP3, FLAC, Ogg Vorbis, Opus, MP4/M4A, WAV, AIFF)"
        )
    length = float(getattr(audio.info, "length", 0.0) or 0.0)
    if length <= 0:
        raise CorruptAudio(f"{path.name}: no audio frames (length 0)")
    return audio, fmt


def probe(path: Path) -> AudioInfo:
    """Properties and normalised tags of an audio file; CorruptAudio when it is not one."""
    audio, fmt = _loaded(path)
    info = audio.info
    bitrate_kbps, sample_rate_hz, bit_depth = stream_properties(info, fmt, path.stat().st_size)
    return AudioInfo(
        format=fmt,
        duration_ms=round(float(info.length) * 1000),
        bitrate_kbps=bitrate_kbps,
        sample_rate_hz=sample_rate_hz,
        bit_depth=bit_depth,
        tags=read_tags(audio.tags),
        has_front_cover=front_cover(audio) is not None,
    )


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class CoverImage:
    """A front cover to embed: the image's bytes and its MIME type (image/jpeg, image/png)."""

    data: bytes
    mime: str


def write_tags_atomically(
    path: Path, changes: dict[str, str], cover: CoverImage | None = None
) -> None:
    """Write `changes` (normalised key -> value) and `cover` into the file without ever
    exposing a partial file: temp copy in the same folder, tag, verify, fsync, rename. On any
    failure the original is untouched and the temp copy removed."""
    if not changes and cover is None:
        return
    folder = path.parent
    # Same suffix, so mutagen's format detection sees the temp file as the original.
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=path.suffix, dir=folder)
    os.close(fd)
    temp = Path(temp_name)
    try:
        shutil.copyfile(path, temp)
        shutil.copymode(path, temp)
        audio, _ = _loaded(temp)
        if audio.tags is None:
            audio.add_tags()
        for key, value in changes.items():
            set_tag(audio.tags, key, value)
        if cover is not None:
            set_front_cover(audio, cover.data, cover.mime)
        audio.save()
        _loaded(temp)  # what is about to replace the original must still be audio
        fsync_file(temp)
        os.replace(temp, path)
        fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
