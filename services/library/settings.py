"""The library module's settings: `SOULSPOT_LIBRARY__*` or `library:` in the config file.

The library folder itself is the shared `SOULSPOT_LIBRARY_ROOT`; the library store's database
lives under `SOULSPOT_STATE_DIR`.
"""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 (pydantic reads the annotation at runtime)

from services.kit.module.spec import ModuleSection
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


class LibrarySettings(KitSettings):
    library: LibrarySection = LibrarySection()
