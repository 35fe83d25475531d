"""services.kit.module.runner: `run_module(spec)`, the whole `__main__` of a module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.module.runner import run_module
from services.kit.module.spec import ModuleParts, ModuleSection, ModuleSpec
from services.kit.support.settings import KitSettings

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from services.kit.module.runtime import ModuleRuntime


class DemoSection(ModuleSection):
    pass


class DemoSettings(KitSettings):
    demo: DemoSection = DemoSection()


def build(runtime: ModuleRuntime[DemoSection]) -> ModuleParts:
    raise AssertionError("the module must not be built")


SPEC = ModuleSpec("demo", 50999, [], build, DemoSection, settings_cls=DemoSettings)


def test_help_names_the_module_its_port_and_its_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_module(SPEC, ["--help"]) == 0
    usage = capsys.readouterr().out
    assert "python -m services.demo" in usage
    assert "127.0.0.1:50999" in usage
    assert "SOULSPOT_DEMO__PORT" in usage


def test_invalid_settings_exit_with_2_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOULSPOT_DEMO__PORT", "not a port")
    assert run_module(SPEC, []) == 2
    assert capsys.readouterr().err.startswith("demo: invalid settings:")


def test_missing_credentials_exit_with_2_naming_the_modules_identity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Logging as a process would set it up is not what this test is about.
    monkeypatch.setattr("services.kit.module.runner.setup_logging", lambda *a, **k: None)
    monkeypatch.delenv("SOULSPOT_TLS__PLAINTEXT", raising=False)
    monkeypatch.setenv("SOULSPOT_TLS__PKI_DIR", str(tmp_path / "pki"))
    assert run_module(SPEC, []) == 2  # and `build` never ran: no port opened
    err = capsys.readouterr().err
    assert err.startswith("demo: no credentials for spiffe://soulspot/module/demo")
    assert "module-demo.crt" in err
