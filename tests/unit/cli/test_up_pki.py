"""`soulspot up`'s certificates (cli/up/pki.py): one folder in the state folder that every
process of the plan reads, a certificate per process, none when the stack runs plaintext."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli.up.pki import ensure_stack_pki, stack_identities, stack_tls
from cli.up.plan import StackPlan, find_compose_file, load_compose, plan_stack
from services.kit.security.ca import MeshCA, identity_files

if TYPE_CHECKING:
    from pathlib import Path

PKI_ENV = "SOULSPOT_TLS__PKI_DIR"


def _plan(state: Path) -> StackPlan:
    return plan_stack(load_compose(find_compose_file()), state, environ={}, python="python")


def test_the_pki_volume_is_the_state_folders_pki_for_every_process(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    expected = tmp_path.resolve() / "state" / "pki"
    assert plan.processes
    assert {p.env[PKI_ENV] for p in plan.processes} == {str(expected)}
    assert stack_tls(plan, {}).pki_dir == expected
    assert "creates them itself" in plan.skipped["pki"]


def test_first_run_creates_a_certificate_for_every_process_of_the_plan(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    pki_dir = ensure_stack_pki(plan, stack_tls(plan, {}))
    assert pki_dir is not None
    ca = MeshCA.load_or_create(pki_dir)
    identities = stack_identities(plan)
    names = {i.uri for i in identities}
    assert "spiffe://soulspot/router/router" in names
    assert "spiffe://soulspot/client/cli" in names
    assert "spiffe://soulspot/module/library" in names
    assert len(identities) == len(plan.processes) + 1  # every process, and `up` itself
    for identity in identities:
        assert ca.is_current(identity_files(pki_dir, identity), identity)


def test_the_callers_folder_wins_and_plaintext_makes_none(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    mine = tmp_path / "mine"
    assert stack_tls(plan, {PKI_ENV: str(mine)}).pki_dir == mine
    plaintext = stack_tls(plan, {"SOULSPOT_TLS__PLAINTEXT": "true"})
    assert ensure_stack_pki(plan, plaintext) is None
    assert not (tmp_path / "state" / "pki").exists()
