"""The one `--router` option (cli/router_connection.py): the flag, else the kit's settings
(SOULSPOT_ROUTER_ADDRESS, then the SOULSPOT_CONFIG file, then the default), in every command."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from cli.router_connection import router_address

if TYPE_CHECKING:
    from pathlib import Path

ENV = "SOULSPOT_ROUTER_ADDRESS"
CONFIG = "SOULSPOT_CONFIG"


@pytest.fixture(autouse=True)
def _no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(CONFIG, raising=False)


def test_the_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "10.0.0.1:5000")
    assert router_address("10.0.0.2:6000") == "10.0.0.2:6000"


def test_without_the_flag_the_environment_then_the_file_then_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert router_address(None) == "127.0.0.1:50051"
    config = tmp_path / "soulspot.yaml"
    config.write_text("router_address: 10.0.0.3:7000\n")
    monkeypatch.setenv(CONFIG, str(config))
    assert router_address(None) == "10.0.0.3:7000"
    monkeypatch.setenv(ENV, "10.0.0.1:5000")
    assert router_address(None) == "10.0.0.1:5000"


def test_a_missing_config_file_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CONFIG, str(tmp_path / "missing.yaml"))
    with pytest.raises(typer.Exit) as exited:
        router_address(None)
    assert exited.value.exit_code == 2


@pytest.mark.parametrize(
    "command", [["status"], ["events", "list"], ["dlq", "list"], ["dlq", "show", "1"]]
)
def test_commands_reach_the_router_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    # Nothing listens on port 1: the command names the address it tried.
    monkeypatch.setenv(ENV, "127.0.0.1:1")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1, result.output
    assert "router 127.0.0.1:1 unreachable" in result.output
