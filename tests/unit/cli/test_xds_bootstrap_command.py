"""`soulspot xds bootstrap`: the router from --router, the CLI's own certificate files by
default or a module's, insecure credentials on a plaintext mesh, a 0600 file with --out."""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers.pki import PKI_DIR_ENV, make_pki

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def pki(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("SOULSPOT_ROUTER_ADDRESS", "SOULSPOT_CONFIG", "SOULSPOT_TLS__PLAINTEXT"):
        monkeypatch.delenv(name, raising=False)
    pki_dir = make_pki(tmp_path / "pki", modules=("library",))
    monkeypatch.setenv(PKI_DIR_ENV, str(pki_dir))
    return pki_dir


def _bootstrap(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["xds", "bootstrap", *args])
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_the_cli_identity_with_mutual_tls_to_the_router(pki: Path) -> None:
    config = _bootstrap("--router", "10.0.0.5:50051")
    (server,) = config["xds_servers"]
    assert server["server_uri"] == "10.0.0.5:50051"
    assert server["server_features"] == ["xds_v3"]
    (creds,) = server["channel_creds"]
    assert creds == {
        "type": "tls",
        "config": {
            "ca_certificate_file": str((pki / "ca.crt").resolve()),
            "certificate_file": str((pki / "client-cli.crt").resolve()),
            "private_key_file": str((pki / "client-cli.key").resolve()),
        },
    }
    assert config["node"] == {"id": "spiffe://soulspot/client/cli", "cluster": "soulspot"}


def test_a_module_identity_and_a_private_file(pki: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "xds.json"
    result = CliRunner().invoke(
        app, ["xds", "bootstrap", "--identity", "module/library", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = json.loads(out.read_text())
    assert config["node"]["id"] == "spiffe://soulspot/module/library"
    creds = config["xds_servers"][0]["channel_creds"][0]["config"]
    assert creds["certificate_file"].endswith("module-library.crt")
    assert config["xds_servers"][0]["server_uri"] == "127.0.0.1:50051"


def test_a_plaintext_mesh_gets_insecure_credentials(
    pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOULSPOT_TLS__PLAINTEXT", "true")
    config = _bootstrap()
    assert config["xds_servers"][0]["channel_creds"] == [{"type": "insecure"}]


def test_an_identity_without_certificates_is_a_usage_error(pki: Path) -> None:
    result = CliRunner().invoke(app, ["xds", "bootstrap", "--identity", "module/nobody"])
    assert result.exit_code == 2
    assert "no credentials for spiffe://soulspot/module/nobody" in result.output


def test_a_malformed_identity_is_a_usage_error(pki: Path) -> None:
    result = CliRunner().invoke(app, ["xds", "bootstrap", "--identity", "library"])
    assert result.exit_code == 2
    assert "--identity" in result.output
