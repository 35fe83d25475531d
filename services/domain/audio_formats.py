"""The file extensions of each AudioFormat a request may prefer, one table for every module.

A `.alac` file is ALAC; a `.m4a` file may hold ALAC or AAC, so both formats claim it. Whether a
file counts as lossless is album_matching's rule by extension (`.alac` is, `.m4a` is not,
whichever codec it holds), so a request that requires lossless keeps only `.alac` of ALAC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from soulspot.common.v1 import references_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["FORMAT_EXTENSIONS", "format_extensions"]

AudioFormat = references_pb2.AudioFormat

# AudioFormat -> its extensions, the most telling first.
FORMAT_EXTENSIONS: dict[int, tuple[str, ...]] = {
    AudioFormat.AUDIO_FORMAT_MP3: ("mp3",),
    AudioFormat.AUDIO_FORMAT_FLAC: ("flac",),
    AudioFormat.AUDIO_FORMAT_OGG: ("ogg",),
    AudioFormat.AUDIO_FORMAT_OPUS: ("opus",),
    AudioFormat.AUDIO_FORMAT_AAC: ("m4a", "aac"),
    AudioFormat.AUDIO_FORMAT_ALAC: ("alac", "m4a"),
    AudioFormat.AUDIO_FORMAT_WAV: ("wav",),
    AudioFormat.AUDIO_FORMAT_AIFF: ("aiff", "aif"),
}


def format_extensions(formats: Iterable[int]) -> tuple[str, ...]:
    """The extensions of `formats` in their order, each once (AAC and ALAC share `.m4a`)."""
    return tuple(dict.fromkeys(ext for fmt in formats for ext in FORMAT_EXTENSIONS.get(fmt, ())))
