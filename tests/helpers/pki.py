"""The mesh's certificates for tests that start real processes: a CA in the test's folder,
the environment that points a process at it, and the transport a test speaks with."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from services.kit.security.__main__ import MESH_MODULES
from services.kit.security.ca import ensure_identities, identity_files
from services.kit.security.identity import CLI, ROUTER, Identity
from services.kit.security.tls import Transport

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

PKI_DIR_ENV = "SOULSPOT_TLS__PKI_DIR"
POLICY_FILE_ENV = "SOULSPOT_ROUTER__POLICY_FILE"


def make_pki(pki_dir: Path, modules: Iterable[str] = MESH_MODULES) -> Path:
    """The CA plus certificates for the router, the command line and `modules` (kept when
    they exist: a module started later adds its own with `add_modules`)."""
    ensure_identities(pki_dir, [ROUTER, CLI, *(Identity.module(m) for m in modules)])
    return pki_dir


def add_modules(pki_dir: Path, *modules: str) -> None:
    ensure_identities(pki_dir, [Identity.module(m) for m in modules])


def tls_env(pki_dir: Path) -> dict[str, str]:
    """What a process needs to find its credentials in `pki_dir`."""
    return {PKI_DIR_ENV: str(pki_dir)}


def transport_as(pki_dir: Path, identity: Identity = CLI) -> Transport:
    """Mutual TLS as `identity` with its files in `pki_dir` (the test's side of a call)."""
    return Transport(identity, identity_files(pki_dir, identity))


def write_policy(path: Path, modules: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """A router policy for a test's own callers: `modules` (name -> capabilities, granted at
    any priority) may register, and the command line (the test) may publish any event type
    and is an admin. Returns the environment that points a router at it."""
    grants = {
        name: {"capabilities": dict.fromkeys(caps, 1000)} for name, caps in (modules or {}).items()
    }
    policy = {"modules": grants, "publishers": {"**": [CLI.uri]}, "admins": [CLI.uri]}
    path.write_text(json.dumps(policy))  # JSON is YAML
    return {POLICY_FILE_ENV: str(path)}
