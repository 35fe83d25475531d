"""Create the mesh CA and its processes' certificates: the compose stack's init step.

    python -m services.kit.security init --pki-dir DIR [--module NAME ...] [--client NAME ...]
        [--nats NAME ...] [--dns NAME ...]

Without --module it issues one certificate per module of the shipped mesh; the router's and
the command line's are always issued; `--nats NAME` issues the one the nodes of a NATS
cluster share (`spiffe://soulspot/nats/NAME`; give each node's host name with --dns).
Existing, current certificates are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from services.kit.security.ca import ensure_identities
from services.kit.security.identity import CLI, ROUTER, Identity

if TYPE_CHECKING:
    from collections.abc import Sequence

MESH_MODULES = (
    "spotify",
    "catalog",
    "soulseek",
    "folder",
    "metadata",
    "library",
    "notifications",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.kit.security")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the CA and the certificates that are missing")
    init.add_argument("--pki-dir", type=Path, required=True)
    init.add_argument("--module", action="append", default=[], help="a module's name")
    init.add_argument("--client", action="append", default=[], help="a client's name")
    init.add_argument(
        "--nats", action="append", default=[], help="a NATS cluster's node identity name"
    )
    init.add_argument("--dns", action="append", default=[], help="an extra DNS name")
    args = parser.parse_args(argv)
    modules = args.module or list(MESH_MODULES)
    identities = [ROUTER, CLI]
    identities += [Identity.module(m) for m in modules]
    identities += [Identity.client(c) for c in args.client]
    identities += [Identity.nats(n) for n in args.nats]
    try:
        files = ensure_identities(args.pki_dir, identities, dns_names=args.dns)
    except (OSError, ValueError) as err:
        print(f"cannot create the mesh's certificates: {err}", file=sys.stderr)
        return 1
    for identity, paths in files.items():
        print(f"{identity.uri}\t{paths.cert}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
