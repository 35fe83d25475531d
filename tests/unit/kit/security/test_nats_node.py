"""The mesh's nats-server configuration: TLS and routers only when given the PKI, and the
node's entry point refusing to start a node whose credentials are missing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.kit.security.ca import ensure_identities
from services.kit.security.identity import ROUTER, Identity
from services.kit.security.nats_node import NodeSpec, main, node_config_lines

if TYPE_CHECKING:
    from pathlib import Path

NODES = Identity.nats("nats")


def _spec(tmp_path: Path, *, tls: bool) -> NodeSpec:
    files = ensure_identities(tmp_path / "pki", [NODES])[NODES] if tls else None
    return NodeSpec(
        server_name="n1",
        listen="127.0.0.1:4222",
        store_dir=tmp_path / "js",
        tls=files,
        node_identity=NODES,
        cluster_name="soulspot",
        cluster_listen="127.0.0.1:6222",
        routes=("nats-route://127.0.0.1:6223",),
    )


def test_a_node_with_the_pki_maps_clients_by_certificate_and_lets_in_only_the_router(
    tmp_path: Path,
) -> None:
    text = "\n".join(node_config_lines(_spec(tmp_path, tls=True)))
    # One tls block for clients, one for routes, each verifying and mapping the peer.
    assert text.count("verify_and_map: true") == 2
    assert f'users = [ {{ user: "{ROUTER.uri}" }} ]' in text
    assert f'user: "{NODES.uri}"' in text, "routes only from the nodes' own identity"
    assert text.count("{ user:") == 1, "no user but the router"


def test_a_node_without_the_pki_is_plaintext(tmp_path: Path) -> None:
    text = "\n".join(node_config_lines(_spec(tmp_path, tls=False)))
    assert "tls {" not in text
    assert "authorization" not in text
    assert 'routes: ["nats-route://127.0.0.1:6223"]' in text


def test_the_entry_point_refuses_a_node_without_its_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--server-name=n1", f"--store-dir={tmp_path}", f"--pki-dir={tmp_path}"])
    assert code == 1
    assert "init --nats nats" in capsys.readouterr().err


def test_the_entry_point_asks_for_tls_or_plaintext_explicitly(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--server-name=n1", f"--store-dir={tmp_path}"])
