"""Settings from `SOULSPOT_*` environment variables and an optional YAML file.

Precedence, highest first: init arguments, environment, the YAML file named by
`SOULSPOT_CONFIG`, field defaults. A module adds its own section by subclassing
`KitSettings` with one field holding its own model, e.g. `soulseek: SoulseekSection`, which
reads `SOULSPOT_SOULSEEK__URL` from the environment and `soulseek: {url: ...}` from the file.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from services.kit.security.tls import TlsSection

CONFIG_ENV = "SOULSPOT_CONFIG"
# The most routers a process registers with (one Register stream each).
MAX_ROUTERS = 8

_S = TypeVar("_S", bound=BaseModel)


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
    # host:port of the router, or of several routers comma-separated (`a:50051,b:50051`):
    # a module then registers with each and calls and publishes through any that answers.
    router_address: str = "127.0.0.1:50051"
    log_level: str = "INFO"
    log_json: bool = True
    # SOULSPOT_TLS__*: the PKI folder this process's certificate is in, or plaintext.
    tls: TlsSection = Field(default_factory=TlsSection)

    @field_validator("router_address")
    @classmethod
    def _router_addresses(cls, value: str) -> str:
        entries = [part.strip() for part in value.split(",") if part.strip()]
        if len(entries) <= 1:
            return value.strip()  # one target, as gRPC takes it (unix:, dns:///, host:port)
        if len(entries) > MAX_ROUTERS:
            raise ValueError(f"at most {MAX_ROUTERS} router addresses, got {len(entries)}")
        for entry in entries:
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"router address {entry!r} is not host:port")
        return ",".join(entries)

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


def section_of(settings: object | None, name: str, section_cls: type[_S]) -> _S:
    """`settings.<name>` when the settings class has that section, else the section as the
    environment (`SOULSPOT_<NAME>__*`) and the config file give it.

    Lets code that takes any KitSettings (tests build plain ones) read a section it needs
    without reading the environment itself.
    """
    found = getattr(settings, name, None)
    if isinstance(found, section_cls):
        return found
    section: _S = getattr(_settings_with_section(name, section_cls)(), name)
    return section


@cache
def _settings_with_section(name: str, section_cls: type[BaseModel]) -> type[KitSettings]:
    fields: dict[str, object] = {name: (section_cls, Field(default_factory=section_cls))}
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{section_cls.__name__}Settings", __base__=KitSettings, **fields
    )


class ProcessSettings(BaseSettings):
    """What a process reads before it knows its own settings class: the event loop it runs
    on (`SOULSPOT_EVENT_LOOP`) and where its spans go (`SOULSPOT_OTEL_EXPORTER`)."""

    model_config = SettingsConfigDict(env_prefix="SOULSPOT_", extra="ignore")

    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # "", "console" or "otlp"; empty turns tracing off.
    otel_exporter: str = ""

    @field_validator("event_loop", mode="before")
    @classmethod
    def _loop_name(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or "uvloop"
        return value

    @field_validator("otel_exporter", mode="before")
    @classmethod
    def _exporter_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value
