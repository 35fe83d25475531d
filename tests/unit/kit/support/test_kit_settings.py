from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.kit.support.settings import KitSettings, ProcessSettings, Section, section_of


class SoulseekSection(Section):
    url: str = "http://localhost:5030"
    api_key: str = ""


class SoulseekSettings(KitSettings):
    soulseek: SoulseekSection = SoulseekSection()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own SOULSPOT_* settings must not leak into these tests.
    for key in list(os.environ):
        if key.startswith("SOULSPOT_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    settings = KitSettings()
    assert settings.state_dir == Path("./.soulspot/state")
    assert settings.router_address == "127.0.0.1:50051"
    assert settings.log_json is True


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_ROUTER_ADDRESS", "10.0.0.1:6000")
    monkeypatch.setenv("SOULSPOT_LOG_JSON", "false")
    monkeypatch.setenv("SOULSPOT_STATE_DIR", "/var/lib/soulspot")
    settings = KitSettings()
    assert settings.router_address == "10.0.0.1:6000"
    assert settings.log_json is False
    assert settings.state_dir == Path("/var/lib/soulspot")


def test_yaml_file_with_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "soulspot.yaml"
    config.write_text(
        "router_address: 10.0.0.2:7000\n"
        "log_level: DEBUG\n"
        "library_root: /music\n"
        "soulseek:\n"
        "  url: http://slskd:5030\n"
        "  api_key: from-file\n"
    )
    monkeypatch.setenv("SOULSPOT_CONFIG", str(config))
    monkeypatch.setenv("SOULSPOT_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("SOULSPOT_SOULSEEK__API_KEY", "from-env")
    settings = SoulseekSettings()
    assert settings.router_address == "10.0.0.2:7000"  # file
    assert settings.library_root == Path("/music")  # file
    assert settings.log_level == "WARNING"  # env beats file
    assert settings.soulseek.url == "http://slskd:5030"  # file, nested
    assert settings.soulseek.api_key == "from-env"  # env beats file, nested


def test_module_section_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_SOULSEEK__URL", "http://other:5030")
    assert SoulseekSettings().soulseek.url == "http://other:5030"
    assert SoulseekSettings().soulseek.api_key == ""


def test_a_named_config_file_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOULSPOT_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError):
        KitSettings()


class _DemoSection(Section):
    url: str = "http://default"
    port: int = 1


def test_a_section_the_settings_class_lacks_is_read_from_env_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "soulspot.yaml"
    config.write_text("demo:\n  url: http://from-file\n  port: 2\n")
    monkeypatch.setenv("SOULSPOT_CONFIG", str(config))
    monkeypatch.setenv("SOULSPOT_DEMO__PORT", "3")
    section = section_of(KitSettings(), "demo", _DemoSection)
    assert (section.url, section.port) == ("http://from-file", 3)


def test_a_section_the_settings_hold_is_taken_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_DEMO__PORT", "3")
    held = _DemoSection(port=9)
    settings = type("WithDemo", (), {"demo": held})()
    assert section_of(settings, "demo", _DemoSection) is held


def test_process_settings_name_the_loop_and_the_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOULSPOT_EVENT_LOOP", " AsyncIO ")
    monkeypatch.setenv("SOULSPOT_OTEL_EXPORTER", " Console ")
    settings = ProcessSettings()
    assert (settings.event_loop, settings.otel_exporter) == ("asyncio", "console")
