"""The soulseek module's settings: `SOULSPOT_SOULSEEK__*` or `soulseek:` in the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from services.kit.module.spec import ModuleSection
from services.kit.support.setting_aliases import milliseconds_to_seconds
from services.kit.support.settings import KitSettings

DEFAULT_PORT = 50063


class SoulseekSection(ModuleSection):
    # Where slskd's REST API answers and the key it accepts (X-API-Key).
    url: str = ""
    api_key: str = ""
    # slskd's downloads folder as this process sees it (slskd writes <dir>/<remote folder>/<file>).
    downloads_dir: Path = Path("./.soulspot/downloads/slskd")
    # Quality defaults for requests that carry no QualityPolicy.
    preferred_formats: list[str] = ["flac", "mp3"]
    min_bitrate_kbps: int = 192
    prefer_lossless: bool = True
    # The largest accepted difference from the requested duration, when both are known.
    duration_tolerance_s: float = Field(default=5.0, gt=0, le=600)
    # Search: how long slskd searches the network, and how long we wait for it at most.
    search_timeout_s: float = 15.0
    search_max_wait_s: float = 30.0
    poll_interval_s: float = 1.0
    # A candidate that shows no progress for this long is given up for the next one.
    stall_timeout_s: float = 300.0
    # How many accepted candidates are tried before download.failed.
    max_attempts: int = 5
    # How often slskd's health is checked in the background.
    probe_interval_s: float = 30.0
    # At most one download.progress per download per this many seconds.
    progress_interval_s: float = 0.5

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # DURATION_TOLERANCE_MS (milliseconds) was this setting's name before durations
        # became seconds; deployments that still set it keep their tolerance.
        return milliseconds_to_seconds(
            data, "duration_tolerance_ms", "duration_tolerance_s", where="soulseek"
        )


class SoulseekSettings(KitSettings):
    soulseek: SoulseekSection = SoulseekSection()
