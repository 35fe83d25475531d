"""Fixtures of the library module's unit tests: an importer over a fresh store and folders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.library.importer import Importer
from services.library.library_store import LibraryStore
from services.library.naming import DEFAULT_TEMPLATE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def importer(tmp_path: Path) -> Iterator[Importer]:
    """Files `<tmp>/downloads` into `<tmp>/library` with the default template; the state
    folder `<tmp>/state` (its store) is forbidden as a source."""
    store = LibraryStore(tmp_path / "state" / "library.sqlite3")
    yield Importer(
        store,
        tmp_path / "library",
        DEFAULT_TEMPLATE,
        import_dirs=[tmp_path / "downloads"],
        forbidden=[tmp_path / "state"],
    )
    store.close()
