"""Read and write an audio file's tags and properties with mutagen, one spelling for all formats.

Tag names are normalised to lower-case keys (title, artist, album, albumartist, tracknumber,
discnumber, date, isrc, musicbrainz_trackid, genre) whatever the container stores: ID3 frames
(MP3, WAV, AIFF), Vorbis comments (FLAC, Ogg Vorbis, Opus) or MP4 atoms.

Writing never touches the original until the new bytes are complete: the file is copied to a
temporary file in the same folder, tagged, re-read, fsynced and renamed over the original, so a
crash at any point leaves either the old file or the new one, never a truncated one.
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

from services.kit.audio_probe import quality_tier
from soulspot.common.v1 import references_pb2

__all__ = [
    "TAG_KEYS",
    "AudioInfo",
    "CorruptAudio",
    "probe",
    "write_tags_atomically",
]

AudioFormat = references_pb2.AudioFormat

# The normalised tag names, in the order they are reported.
TAG_KEYS: tuple[str, ...] = (
    "title",
    "artist",
    "album",
    "albumartist",
    "tracknumber",
    "discnumber",
    "date",
    "isrc",
    "musicbrainz_trackid",
    "genre",
)

_LOSSLESS = frozenset(
    {
        AudioFormat.AUDIO_FORMAT_FLAC,
        AudioFormat.AUDIO_FORMAT_ALAC,
        AudioFormat.AUDIO_FORMAT_WAV,
        AudioFormat.AUDIO_FORMAT_AIFF,
    }
)


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
    bitrate = int(getattr(info, "bitrate", 0) or 0)
    bits = int(getattr(info, "bits_per_sample", 0) or 0)
    return AudioInfo(
        format=fmt,
        duration_ms=round(float(info.length) * 1000),
        bitrate_kbps=round(bitrate / 1000),
        sample_rate_hz=int(getattr(info, "sample_rate", 0) or 0),
        # The contract keeps bit depth for lossless formats only.
        bit_depth=bits if fmt in _LOSSLESS else 0,
        tags=_read_tags(audio.tags),
    )


# ---------------------------------------------------------------------------------------------
# Tag families


_ID3_TEXT: dict[str, str] = {
    "title": "TIT2",
    "artist": "TPE1",
    "album": "TALB",
    "albumartist": "TPE2",
    "tracknumber": "TRCK",
    "discnumber": "TPOS",
    "date": "TDRC",
    "isrc": "TSRC",
    "genre": "TCON",
}
_MB_UFID_OWNER = "http://musicbrainz.org"  # where Picard and EasyID3 keep the recording id

_MP4_TEXT: dict[str, str] = {
    "title": "\xa9nam",
    "artist": "\xa9ART",
    "album": "\xa9alb",
    "albumartist": "aART",
    "date": "\xa9day",
    "genre": "\xa9gen",
}
_MP4_FREEFORM: dict[str, str] = {
    "isrc": "----:com.apple.iTunes:ISRC",
    "musicbrainz_trackid": "----:com.apple.iTunes:MusicBrainz Track Id",
}
_MP4_PAIRS: dict[str, str] = {"tracknumber": "trkn", "discnumber": "disk"}


def _read_tags(tags: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if tags is None:
        return out
    for key in TAG_KEYS:
        value = _get(tags, key)
        if value:
            out[key] = value
    return out


def _get(tags: Any, key: str) -> str:
    if isinstance(tags, id3.ID3):
        if key == "musicbrainz_trackid":
            frame = tags.get(f"UFID:{_MB_UFID_OWNER}")
            return bytes(frame.data).decode("ascii", "replace") if frame is not None else ""
        frame = tags.get(_ID3_TEXT[key])
        return str(frame.text[0]).strip() if frame is not None and frame.text else ""
    if isinstance(tags, mp4.MP4Tags):
        if key in _MP4_TEXT:
            values = tags.get(_MP4_TEXT[key]) or []
            return str(values[0]).strip() if values else ""
        if key in _MP4_FREEFORM:
            values = tags.get(_MP4_FREEFORM[key]) or []
            return bytes(values[0]).decode("utf-8", "replace").strip() if values else ""
        pairs = tags.get(_MP4_PAIRS[key]) or []
        return str(pairs[0][0]) if pairs and pairs[0][0] else ""
    # Vorbis comments: case-insensitive keys, lists of strings.
    values = tags.get(key) or []
    return str(values[0]).strip() if values else ""


def _set(tags: Any, key: str, value: str) -> None:
    if isinstance(tags, id3.ID3):
        if key == "musicbrainz_trackid":
            tags.delall(f"UFID:{_MB_UFID_OWNER}")
            tags.add(id3.UFID(owner=_MB_UFID_OWNER, data=value.encode("ascii", "replace")))
            return
        frame_id = _ID3_TEXT[key]
        tags.delall(frame_id)
        tags.add(getattr(id3, frame_id)(encoding=3, text=[value]))
        return
    if isinstance(tags, mp4.MP4Tags):
        if key in _MP4_TEXT:
            tags[_MP4_TEXT[key]] = [value]
        elif key in _MP4_FREEFORM:
            tags[_MP4_FREEFORM[key]] = [mp4.MP4FreeForm(value.encode("utf-8"))]
        else:
            number = int(value) if value.isdigit() else 0
            old = tags.get(_MP4_PAIRS[key]) or [(0, 0)]
            tags[_MP4_PAIRS[key]] = [(number, int(old[0][1]) if len(old[0]) > 1 else 0)]
        return
    tags[key] = [value]


# ---------------------------------------------------------------------------------------------
# Writing


def _fsync_dir(folder: Path) -> None:
    # A rename is durable only once the directory entry is; not every platform allows it.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_tags_atomically(path: Path, changes: dict[str, str]) -> None:
    """Write `changes` (normalised key -> value) into the file without ever exposing a partial
    file: temp copy in the same folder, tag, verify, fsync, rename. On any failure the
    original is untouched and the temp copy removed."""
    if not changes:
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
            _set(audio.tags, key, value)
        audio.save()
        _loaded(temp)  # what is about to replace the original must still be audio
        with temp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
