"""The catalog module's settings: `SOULSPOT_CATALOG__*` or `catalog:` in the config file."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 (pydantic resolves the annotation at runtime)

from services.kit.module.spec import ModuleSection
from services.kit.support.settings import KitSettings

DEFAULT_PORT = 50062


class CatalogSection(ModuleSection):
    # The index database; unset: <state_dir>/catalog/catalog.sqlite3.
    db_path: Path | None = None
    # Index the files already under SOULSPOT_LIBRARY_ROOT when the module starts.
    scan_on_start: bool = True
    # Results when a request leaves the limit at 0, and the most a request may ask for.
    default_limit: int = 10
    max_limit: int = 100


class CatalogSettings(KitSettings):
    catalog: CatalogSection = CatalogSection()
