"""The library module's settings: `SOULSPOT_LIBRARY__*` or `library:` in the config file.

The library folder itself is the shared `SOULSPOT_LIBRARY_ROOT`; the library store's database
lives under `SOULSPOT_STATE_DIR`. import.track takes files only from `import_dirs`.
"""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 (pydantic reads the annotation at runtime)

from pydantic import Field

from services.kit.module.spec import ModuleSection
from services.kit.support.folder_list import DEFAULT_DOWNLOADS_DIR, FolderList
from services.kit.support.settings import KitSettings
from services.library.naming import DEFAULT_TEMPLATE

DEFAULT_PORT = 50066


class LibrarySection(ModuleSection):
    # SOULSPOT_LIBRARY__PATH_TEMPLATE: where a track goes, relative to the library root.
    path_template: str = DEFAULT_TEMPLATE
    # SOULSPOT_LIBRARY__CATALOG_PATH: the library store's SQLite file; default
    # <state dir>/library.sqlite3.
    catalog_path: Path | None = None
    # How often the library root is checked for writability, in seconds.
    health_interval_s: float = 30.0
    # SOULSPOT_LIBRARY__IMPORT_DIRS: the folders import.track may take files from (the
    # download modules' downloads folders), PATH-style or a JSON list. A file elsewhere, a
    # symlink or a special file is refused; the state folder never counts. Empty: nothing
    # may be imported and the module reports NOT_SERVING.
    import_dirs: FolderList = Field(default_factory=lambda: [DEFAULT_DOWNLOADS_DIR])


class LibrarySettings(KitSettings):
    library: LibrarySection = LibrarySection()
