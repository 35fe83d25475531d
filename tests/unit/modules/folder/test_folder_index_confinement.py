"""The folder module's index holds only regular audio files inside its source folder: a
symlink (to a file or a folder elsewhere) or a FIFO named like audio is never indexed."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from services.folder.index import FolderIndex
from services.kit.testing.sample_audio import write_flac

if TYPE_CHECKING:
    from pathlib import Path


def test_only_regular_files_inside_the_source_folder_are_indexed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    real = write_flac(source / "Artist" / "real.flac", seconds=0.3, tags={"title": "Real"})
    elsewhere = tmp_path / "elsewhere"
    outside = write_flac(elsewhere / "private.flac", seconds=0.3, tags={"title": "Private"})
    (source / "Artist" / "linked.flac").symlink_to(outside)
    (source / "linked-folder").symlink_to(elsewhere, target_is_directory=True)
    os.mkfifo(source / "Artist" / "pipe.flac")

    index = FolderIndex(source)
    assert index.scan() == 1
    assert sorted(index.entries) == [real]
    assert [entry.title for entry in index.entries.values()] == ["Real"]
