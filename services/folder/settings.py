"""The folder module's settings: `SOULSPOT_FOLDER__*` or `folder:` in the config file."""

from __future__ import annotations

from pathlib import Path

from services.kit.module.spec import ModuleSection
from services.kit.support.settings import KitSettings

DEFAULT_PORT = 50064


class FolderSection(ModuleSection):
    # The folder to take files from (never written to); unset means the module cannot serve.
    source_dir: Path | None = None
    # Where copies land: <downloads_dir>/<source parent folder>/<file name>.
    downloads_dir: Path = Path("./.soulspot/downloads/folder")
    # The largest accepted difference from the requested duration, when both are known.
    duration_tolerance_ms: int = 5000
    # Re-read changed files in the source folder at most this often (on demand).
    rescan_interval_s: float = 30.0
    # How often the folders are checked for the health status.
    probe_interval_s: float = 30.0
    # How long DownloadTrack waits for the copy before answering "in progress".
    answer_within_s: float = 20.0


class FolderSettings(KitSettings):
    folder: FolderSection = FolderSection()
