"""The path template and file-name sanitising."""

from __future__ import annotations

import pytest

from services.library.naming import (
    DEFAULT_TEMPLATE,
    MAX_SEGMENT_BYTES,
    TemplateError,
    numbered,
    render_path,
    sanitize_segment,
    validate_template,
)
from soulspot.common.v1 import references_pb2

Track = references_pb2.TrackReference


def test_default_template_with_everything_known() -> None:
    track = Track(
        title="Harbour Lights",
        artist="The Paper Lanterns",
        album="Night Ferry",
        year=2019,
        track_number=1,
        disc_number=1,
    )
    path = render_path(DEFAULT_TEMPLATE, track, ".FLAC")
    assert str(path) == "The Paper Lanterns/Night Ferry (2019)/01 - Harbour Lights.flac"


def test_missing_values_get_fallbacks_and_leave_no_debris() -> None:
    path = render_path(DEFAULT_TEMPLATE, Track(title="Untitled Demo", artist="Nobody"), ".mp3")
    assert str(path) == "Nobody/Unknown Album/Untitled Demo.mp3"
    assert str(render_path(DEFAULT_TEMPLATE, Track(), ".mp3")) == (
        "Unknown Artist/Unknown Album/Unknown Title.mp3"
    )


def test_later_discs_get_a_prefix_and_album_artist_wins() -> None:
    track = Track(
        title="B", artist="Guest", album_artist="Host", album="A", track_number=3, disc_number=2
    )
    assert str(render_path(DEFAULT_TEMPLATE, track, ".flac")) == "Host/A/2-03 - B.flac"


def test_values_cannot_add_folders_or_hide_files() -> None:
    track = Track(title="../../etc/passwd", artist="AC/DC", album="..", track_number=1)
    path = render_path(DEFAULT_TEMPLATE, track, ".mp3")
    assert path.parts[0] == "AC_DC"
    assert path.parts[1] == "Unknown Album"
    assert len(path.parts) == 3
    assert ".." not in path.parts
    assert not any(part.startswith(".") for part in path.parts)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('a:b*c?"d<e>f|g', "a_b_c__d_e_f_g"),
        (".hidden", "hidden"),
        ("trailing. ", "trailing"),
        ("CON", "CON_"),
        ("nul.txt", "nul.txt_"),
        ("tab\there", "tab here"),
        ("...", ""),
    ],
)
def test_sanitize_segment(raw: str, expected: str) -> None:
    assert sanitize_segment(raw) == expected


def test_long_names_are_cut_on_character_boundaries_keeping_the_extension() -> None:
    name = "é" * 300 + ".flac"
    safe = sanitize_segment(name, keep_suffix=".flac")
    assert safe.endswith(".flac")
    assert len(safe.encode("utf-8")) <= MAX_SEGMENT_BYTES
    safe.encode("utf-8").decode("utf-8")  # still valid UTF-8


@pytest.mark.parametrize(
    "template",
    ["/abs/{title}.{ext}", "../{title}.{ext}", "{artist}/{nope}.{ext}", "{title", "   "],
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        validate_template(template)


def test_numbered_names() -> None:
    assert numbered("01 - Song.flac", 2) == "01 - Song (2).flac"
    assert numbered("noext", 3) == "noext (3)"
