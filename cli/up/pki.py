"""The mesh's certificates for `soulspot up`: the CA and one certificate per process it runs,
created on the first run (and renewed when close to expiry) in the stack's PKI folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from services.kit.security.ca import ensure_identities
from services.kit.security.identity import CLI, ROUTER, Identity
from services.kit.security.tls import PKI_SUBDIR, TlsSection

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cli.up.plan import StackPlan

PKI_DIR_ENV = "SOULSPOT_TLS__PKI_DIR"
PLAINTEXT_ENV = "SOULSPOT_TLS__PLAINTEXT"
STATE_DIR_ENV = "SOULSPOT_STATE_DIR"


def stack_identities(plan: StackPlan) -> list[Identity]:
    """The router, the command line (`up` itself probes and reports as it) and each module."""
    identities = [ROUTER, CLI]
    for process in plan.processes:
        if not process.is_router:
            # `python -m services.<name>` serves the module <name>.
            identities.append(Identity.module(process.argv[2].rpartition(".")[2]))
    return identities


def stack_tls(plan: StackPlan, environ: Mapping[str, str]) -> TlsSection:
    """The TLS section every process of the stack reads: the caller's SOULSPOT_TLS__* over
    the plan's (compose's) values, the PKI folder by default in the state folder."""
    first = plan.router or (plan.processes[0] if plan.processes else None)
    env = dict(first.env) if first is not None else {}
    env.update({k: v for k, v in environ.items() if k.startswith("SOULSPOT_")})
    state_dir = Path(env.get(STATE_DIR_ENV) or plan.state_dir / "state")
    return TlsSection.model_validate(
        {
            "plaintext": env.get(PLAINTEXT_ENV) or False,
            "pki_dir": env.get(PKI_DIR_ENV) or state_dir / PKI_SUBDIR,
        }
    )


def ensure_stack_pki(plan: StackPlan, tls: TlsSection) -> Path | None:
    """Create what is missing of the stack's CA and certificates; None when it runs plaintext."""
    if tls.plaintext or tls.pki_dir is None:
        return None
    ensure_identities(tls.pki_dir, stack_identities(plan))
    return tls.pki_dir
