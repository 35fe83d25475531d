"""Track lists from files: sldl-style CSVs and "Artist - Title" lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cli.sources import SourceError, parse_length, read_csv, read_list

if TYPE_CHECKING:
    from pathlib import Path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "ms"),
    [("215", 215_000), ("215.4", 215_400), ("3:35", 215_000), ("1:02:03", 3_723_000), ("", 0)],
)
def test_lengths_in_seconds_or_clock_form(text: str, ms: int) -> None:
    assert parse_length(text) == ms


@pytest.mark.parametrize("text", ["abc", "-3", "3:3x"])
def test_other_lengths_are_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is the caller's to write)
        parse_length(text)


def test_csv_columns_are_found_by_name_whatever_their_case_and_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.csv",
        "LENGTH,title,Album,ARTIST\n215,Harbour Lights,Night Ferry,The Paper Lanterns\n"
        '3:02,"Salt, Roads",,Other Band\n\n',
    )
    tracks = read_csv(path)
    assert [(t.artist, t.title, t.album, t.duration_ms) for t in tracks] == [
        ("The Paper Lanterns", "Harbour Lights", "Night Ferry", 215_000),
        ("Other Band", "Salt, Roads", "", 182_000),
    ]


def test_csv_with_semicolons_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes("\ufeffArtist;Title\nA;Song One\nB;Song Two\n".encode())
    assert [(t.artist, t.title) for t in read_csv(path)] == [("A", "Song One"), ("B", "Song Two")]


def test_csv_without_a_title_column_names_what_it_found(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.csv", "Artist,Album,Length\nA,B,200\n")
    with pytest.raises(SourceError) as caught:
        read_csv(path)
    message = str(caught.value)
    assert "no title column" in message
    assert "'Artist', 'Album', 'Length'" in message
    assert "Needed: a Title column" in message


def test_csv_with_a_bad_length_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", "Artist,Title,Length\nA,One,200\nB,Two,long\n")
    with pytest.raises(SourceError, match=r"line 3: length 'long'"):
        read_csv(path)


def test_an_empty_or_missing_csv_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="empty"):
        read_csv(_write(tmp_path, "e.csv", ""))
    with pytest.raises(SourceError, match="no such file"):
        read_csv(tmp_path / "absent.csv")


def test_list_lines_skip_blanks_and_comments(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "l.txt",
        "# road trip\nThe Paper Lanterns - Harbour Lights\n\n  Band - Song - Live Version  \n"
        "Title Alone\n",
    )
    assert [(t.artist, t.title) for t in read_list(path)] == [
        ("The Paper Lanterns", "Harbour Lights"),
        ("Band", "Song - Live Version"),
        ("", "Title Alone"),
    ]
