"""Secret JSON files: owner-only modes, whole replacement, and no content in errors."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from services.kit.support.secret_file import read_secret_json, write_secret_json

if TYPE_CHECKING:
    from pathlib import Path


def test_written_owner_only_and_replaced_whole(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "spotify"
    folder.mkdir(parents=True, mode=0o755)
    os.chmod(folder, 0o755)
    path = folder / "token.json"
    write_secret_json(path, {"refresh_token": "first"})
    write_secret_json(path, {"refresh_token": "second"})
    assert read_secret_json(path) == {"refresh_token": "second"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # narrowed, not only created so
    assert os.listdir(folder) == ["token.json"]


def test_a_missing_file_reads_as_none(tmp_path: Path) -> None:
    assert read_secret_json(tmp_path / "absent.json") is None


def test_a_broken_file_is_named_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text('{"refresh_token": "s3cr3t"', encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON") as caught:
        read_secret_json(path)
    assert "s3cr3t" not in str(caught.value)
