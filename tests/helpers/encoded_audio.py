"""Audio files from real encoders, for the formats `services.kit.testing.sample_audio` cannot write.

sample_audio writes FLAC, MP3 and WAV containers in pure Python. AAC and ALAC in MP4, Ogg
Vorbis, Opus and AIFF come from ffmpeg's encoders as PyAV's wheels ship them: a second of a
440 Hz tone, stereo.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
from av.audio.stream import AudioStream

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Encoding:
    suffix: str
    codec: str
    container: str
    sample_rate: int
    # ffmpeg's own Vorbis encoder is marked experimental: it must be asked for explicitly.
    experimental: bool = False


ENCODINGS: dict[str, Encoding] = {
    "aac": Encoding(".m4a", "aac", "ipod", 44100),
    "alac": Encoding(".m4a", "alac", "ipod", 44100),
    "vorbis": Encoding(".ogg", "vorbis", "ogg", 44100, experimental=True),
    "opus": Encoding(".opus", "libopus", "opus", 48000),
    "aiff": Encoding(".aiff", "pcm_s16be", "aiff", 44100),
}

_CHUNK = 1024  # samples per frame handed to the encoder


def _tone(start: int, count: int, rate: int) -> bytes:
    """Interleaved signed 16-bit stereo samples of a 440 Hz tone."""
    samples = array("h")
    for i in range(start, start + count):
        value = int(8000 * math.sin(2 * math.pi * 440 * i / rate))
        samples.extend((value, value))
    return samples.tobytes()


def encode(folder: Path, name: str, *, seconds: float = 1.0) -> Path:
    """`folder`/`name`.<suffix>, `seconds` long, in the encoding named `name`."""
    encoding = ENCODINGS[name]
    path = folder / f"{name}{encoding.suffix}"
    rate = encoding.sample_rate
    options = {"strict": "experimental"} if encoding.experimental else {}
    with av.open(str(path), mode="w", format=encoding.container) as out:
        stream = out.add_stream(encoding.codec, rate=rate, options=options)
        assert isinstance(stream, AudioStream)
        stream.layout = "stereo"
        total = int(seconds * rate)
        for start in range(0, total, _CHUNK):
            count = min(_CHUNK, total - start)
            frame = av.AudioFrame(format="s16", layout="stereo", samples=count)
            frame.planes[0].update(_tone(start, count, rate))
            frame.sample_rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))  # the encoder resamples to the format it takes
        out.mux(stream.encode(None))
    return path


def decoded_seconds(path: Path) -> float:
    """How much audio a decoder gets out of the file."""
    samples = 0
    rate = 0
    with av.open(str(path)) as source:
        for frame in source.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate if rate else 0.0
