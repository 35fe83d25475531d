"""The one `--router` option (cli/router_connection.py): the flag, else the kit's settings
(SOULSPOT_ROUTER_ADDRESS, then the SOULSPOT_CONFIG file, then the default), in every command;
and the command line's identity on the mesh (its certificate, `soulspot --pki-dir`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from cli.router_connection import router_address
from services.kit.security.identity import CLI
from services.kit.security.tls import current_transport
from tests.helpers.pki import PKI_DIR_ENV, make_pki

if TYPE_CHECKING:
    from pathlib import Path

ENV = "SOULSPOT_ROUTER_ADDRESS"
CONFIG = "SOULSPOT_CONFIG"


PLAINTEXT = "SOULSPOT_TLS__PLAINTEXT"


@pytest.fixture(autouse=True)
def _no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv(CONFIG, raising=False)
    monkeypatch.delenv(PLAINTEXT, raising=False)
    # The command line's certificate, where the settings point.
    monkeypatch.setenv(PKI_DIR_ENV, str(make_pki(tmp_path / "pki", modules=())))


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


def test_commands_speak_as_the_command_line_with_its_certificate(tmp_path: Path) -> None:
    router_address(None)
    transport = current_transport()
    assert transport is not None
    assert transport.identity == CLI
    assert transport.files is not None
    assert transport.files.cert == tmp_path / "pki" / "client-cli.crt"


def test_missing_credentials_are_a_usage_error_naming_the_identity(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PKI_DIR_ENV, str(tmp_path / "nowhere"))
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "no credentials for spiffe://soulspot/client/cli" in result.output


def test_the_pki_dir_flag_wins_over_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PKI_DIR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv(ENV, "127.0.0.1:1")
    result = CliRunner().invoke(app, ["--pki-dir", str(tmp_path / "pki"), "status"])
    assert result.exit_code == 1, result.output  # past the credentials: no router there
    assert "router 127.0.0.1:1 unreachable" in result.output


def test_plaintext_only_when_asked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(PKI_DIR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv(PLAINTEXT, "true")
    router_address(None)
    transport = current_transport()
    assert transport is not None
    assert not transport.secure
