"""`soulspot get --json` and `get --album --json` through real processes (router, folder,
metadata, library): one JSON document on standard output with the track's or album's library
paths, notes on standard error; and the plain output fits 80 columns."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from services.kit.testing.sample_audio import make_sample_library
from tests.helpers.flows import METADATA_ENV, folder_env, start_cli, start_stack

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARTIST, ALBUM = "The Paper Lanterns", "Night Ferry"
TITLES = ["Harbour Lights", "Salt Road", "Lantern Song"]
SINGLE = {"artist": "Quiet Coast", "album": "Tidewater", "title": "Low Tide", "track_number": 1}


def _sample(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    make_sample_library(
        source,
        [
            {"artist": ARTIST, "album": ALBUM, "title": t, "track_number": n, "seconds": 2.0}
            for n, t in enumerate(TITLES, 1)
        ],
    )
    make_sample_library(source, [{**SINGLE, "seconds": 2.0}])
    return source


async def _cli(mesh: Mesh, *args: str, columns: int = 80) -> tuple[int, str, str]:
    """`soulspot ARGS` as a process: exit code, standard output, standard error."""
    cli = await start_cli(mesh, *args, env={"COLUMNS": str(columns)}, merge_errors=False)
    out, err = await asyncio.wait_for(cli.communicate(), 90)
    assert cli.returncode is not None
    return cli.returncode, out.decode(), err.decode()


def _document(code: int, out: str, err: str) -> dict[str, Any]:
    assert code == 0, out + err
    document: dict[str, Any] = json.loads(out)  # the whole of standard output, nothing else
    return document


async def test_get_and_get_album_print_one_json_document_with_library_paths(
    mesh: Mesh, tmp_path: Path
) -> None:
    await start_stack(
        mesh,
        {
            "folder": folder_env(tmp_path, _sample(tmp_path)),
            "metadata": METADATA_ENV,
            "library": None,
        },
    )
    await mesh.wait_routable("folder", "download.album", timeout=60)
    query = f"{SINGLE['artist']} - {SINGLE['title']}"
    got = _document(*await _cli(mesh, "get", query, "--timeout", "60", "--json"))
    assert got["query"] == query
    assert (got["track"]["artist"], got["track"]["title"]) == (SINGLE["artist"], SINGLE["title"])
    assert got["outcome"] == "downloaded"
    assert got["library_path"].startswith(str(mesh.library_root))
    assert got["library_path"].endswith("Low Tide.flac")
    assert all(got[name] for name in ("source", "download_id")), got
    assert got["detail"] == ""

    # Asked again: the library holds it already, and says where.
    code, out, err = await _cli(mesh, "get", query, "--json")
    again = _document(code, out, err)
    assert (again["outcome"], again["library_path"]) == ("already_in_library", got["library_path"])

    album = _document(
        *await _cli(mesh, "get", "--album", f"{ARTIST} - {ALBUM}", "--timeout", "60", "--json")
    )
    assert (album["artist"], album["album"], album["outcome"]) == (ARTIST, ALBUM, "ready")
    assert all(album[name] for name in ("album_download_id", "source", "folder")), album
    assert album["track_count"] == len(TITLES)
    assert [t["title"] for t in album["tracks"]] == TITLES
    for track in album["tracks"]:
        assert track["outcome"] == "imported"
        assert track["path"].startswith(str(mesh.library_root)), track

    # The plain output of the same command at 80 columns: no line is longer.
    code, out, err = await _cli(mesh, "get", query, columns=80)
    assert code == 0, out + err
    assert "already in the library" in out
    assert max(len(line) for line in (out + err).splitlines()) <= 80
