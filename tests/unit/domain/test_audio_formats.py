"""One table of AudioFormat extensions: ALAC claims `.alac` and `.m4a`, AAC shares `.m4a`,
and a list of formats gives each extension once, in the formats' order."""

from __future__ import annotations

from services.domain.album_matching import LOSSLESS_EXTENSIONS
from services.domain.audio_formats import FORMAT_EXTENSIONS, format_extensions
from soulspot.common.v1 import references_pb2


def test_alac_is_an_alac_file_or_an_m4a() -> None:
    assert format_extensions([references_pb2.AUDIO_FORMAT_ALAC]) == ("alac", "m4a")


def test_formats_sharing_an_extension_give_it_once_in_order() -> None:
    formats = [references_pb2.AUDIO_FORMAT_AAC, references_pb2.AUDIO_FORMAT_ALAC]
    assert format_extensions(formats) == ("m4a", "aac", "alac")


def test_an_unknown_format_has_no_extensions() -> None:
    assert format_extensions([references_pb2.AUDIO_FORMAT_UNSPECIFIED]) == ()


def test_every_named_format_has_extensions_and_lossless_agrees_with_album_matching() -> None:
    named = {
        value
        for value in references_pb2.AudioFormat.values()
        if value != references_pb2.AUDIO_FORMAT_UNSPECIFIED
    }
    assert set(FORMAT_EXTENSIONS) == named
    lossless = {"flac", "alac", "wav", "aiff", "aif"}
    extensions = {ext for exts in FORMAT_EXTENSIONS.values() for ext in exts}
    # `.m4a` may hold AAC, so album_matching does not count it lossless.
    assert extensions & LOSSLESS_EXTENSIONS == lossless
