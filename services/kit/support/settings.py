"""Settings from `SOULSPOT_*` environment variables and an optional YAML file.

Precedence, highest first: init arguments, environment, the YAML file named by
`SOULSPOT_CONFIG`, field defaults. A module adds its own section by subclassing
`KitSettings` with one field holding its own model, e.g. `soulseek: SoulseekSection`, which
reads `SOULSPOT_SOULSEEK__URL` from the environment and `soulseek: {url: ...}` from the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "SOULSPOT_CONFIG"


class Section(BaseModel):
    """Base for a module's own settings section (a nested model of `KitSettings`)."""

    model_config = ConfigDict(extra="ignore")


class KitSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SOULSPOT_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    # Which environment variable names the YAML file; a class variable so tests or tools
    # can point a subclass elsewhere without touching the process environment.
    config_env: ClassVar[str] = CONFIG_ENV

    state_dir: Path = Path("./.soulspot/state")
    library_root: Path = Path("./.soulspot/library")
    router_address: str = "127.0.0.1:50051"
    log_level: str = "INFO"
    log_json: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(cls.config_env)
        if config_file:
            path = Path(config_file)
            # The file was named explicitly: a typo must fail loudly, not fall back to defaults.
            if not path.is_file():
                raise FileNotFoundError(f"{cls.config_env}={config_file}: no such file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)
