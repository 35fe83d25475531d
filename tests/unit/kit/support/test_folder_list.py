"""Folder-list settings: PATH-style or JSON from the environment, a list from the file,
empty meaning nothing, and a bound on their length; each module's section reads its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from router.pipeline import create_pipeline
from router.settings import RouterSettings
from services.kit.support.folder_list import DEFAULT_DOWNLOADS_DIR, MAX_FOLDERS
from services.library.settings import LibrarySettings
from services.metadata.settings import MetadataSettings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/data/downloads", [Path("/data/downloads")]),
        ("/data/downloads:/srv/music", [Path("/data/downloads"), Path("/srv/music")]),
        ('["/data/downloads", "/srv/music"]', [Path("/data/downloads"), Path("/srv/music")]),
        ("", []),
    ],
)
def test_import_dirs_read_path_style_or_json(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[Path]
) -> None:
    monkeypatch.setenv("SOULSPOT_LIBRARY__IMPORT_DIRS", raw)
    assert LibrarySettings().library.import_dirs == expected


def test_the_defaults_name_the_downloads_folder_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LIBRARY__IMPORT_DIRS", "METADATA__TAG_DIRS", "ROUTER__DOWNLOAD_DIRS"):
        monkeypatch.delenv(f"SOULSPOT_{name}", raising=False)
    assert LibrarySettings().library.import_dirs == [DEFAULT_DOWNLOADS_DIR]
    assert MetadataSettings().metadata.tag_dirs == [DEFAULT_DOWNLOADS_DIR]
    assert RouterSettings().router.download_dirs == [DEFAULT_DOWNLOADS_DIR]


def test_too_many_folders_fail_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    many = ":".join(f"/d{i}" for i in range(MAX_FOLDERS + 1))
    monkeypatch.setenv("SOULSPOT_METADATA__TAG_DIRS", many)
    with pytest.raises(ValidationError, match="tag_dirs"):
        MetadataSettings()


def test_the_pipeline_gets_the_routers_download_dirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOULSPOT_ROUTER__DOWNLOAD_DIRS", str(tmp_path / "downloads"))
    pipeline = create_pipeline(RouterSettings(state_dir=tmp_path / "state"))
    assert pipeline.download_dirs == [tmp_path / "downloads"]
