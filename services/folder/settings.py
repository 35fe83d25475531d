"""The folder module's settings: `SOULSPOT_FOLDER__*` or `folder:` in the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from services.kit.module.spec import ModuleSection
from services.kit.support.setting_aliases import milliseconds_to_seconds
from services.kit.support.settings import KitSettings

DEFAULT_PORT = 50064


class FolderSection(ModuleSection):
    # The folder to take files from (never written to); unset means the module cannot serve.
    source_dir: Path | None = None
    # Where copies land: <downloads_dir>/<source parent folder>/<file name>.
    downloads_dir: Path = Path("./.soulspot/downloads/folder")
    # The largest accepted difference from the requested duration, when both are known.
    duration_tolerance_s: float = Field(default=5.0, gt=0, le=600)
    # Re-read changed files in the source folder at most this often (on demand).
    rescan_interval_s: float = 30.0
    # How often the folders are checked for the health status.
    probe_interval_s: float = 30.0
    # How long DownloadTrack waits for the copy before answering "in progress".
    answer_within_s: float = 20.0

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # DURATION_TOLERANCE_MS (milliseconds) was this setting's name before durations
        # became seconds; deployments that still set it keep their tolerance.
        return milliseconds_to_seconds(
            data, "duration_tolerance_ms", "duration_tolerance_s", where="folder"
        )


class FolderSettings(KitSettings):
    folder: FolderSection = FolderSection()
