"""The router's policy: registration by own name and granted capabilities, publishing by the
contracts' producers, admin by identity; a bad policy file names its entry."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from router.security.policy import Policy, PolicyError, load_policy
from services.kit.events.registry import default_registry
from services.kit.security.identity import CLI, ROUTER, Identity

if TYPE_CHECKING:
    from pathlib import Path

LIBRARY = Identity.module("library")
SOULSEEK = Identity.module("soulseek")
EVIL = Identity.module("evil")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(None, default_registry())


def test_a_module_registers_only_as_itself(policy: Policy) -> None:
    assert policy.registration_problems(LIBRARY, "library", [("import.track", 10)]) == {}
    problems = policy.registration_problems(EVIL, "library", [("import.track", 10)])
    assert "may register only as itself" in problems["announce.name"]
    assert policy.registration_problems(CLI, "library", [])  # a client is no module


def test_only_granted_capabilities_up_to_their_priority(policy: Policy) -> None:
    evil = policy.registration_problems(EVIL, "evil", [("import.track", 1)])
    assert "not granted to module 'evil'" in evil["announce.capabilities[0]"]
    library = policy.registration_problems(
        LIBRARY, "library", [("library.statistics", 10), ("import.track", 1000)]
    )
    assert list(library) == ["announce.capabilities[1]"]
    assert "above the 10" in library["announce.capabilities[1]"]


def test_publishers_are_the_contracts_producers(policy: Policy) -> None:
    assert policy.may_publish(SOULSEEK, "download.completed")
    assert policy.may_publish(Identity.module("folder"), "download.completed")
    assert policy.may_publish(LIBRARY, "track.imported")
    assert policy.may_publish(ROUTER, "track.ready")
    assert policy.may_publish(CLI, "playlist.track_handled")
    assert not policy.may_publish(LIBRARY, "download.completed")
    assert not policy.may_publish(SOULSEEK, "track.imported")
    assert not policy.may_publish(CLI, "download.completed")
    assert not policy.may_publish(EVIL, "track.ready")


def test_the_file_grants_more_publishers_and_modules(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "modules:\n"
        "  mydl: {capabilities: {download.track: 7}}\n"
        "publishers:\n"
        "  download.*: [spiffe://soulspot/module/mydl]\n"
        "admins: [spiffe://soulspot/client/ops]\n"
    )
    custom = load_policy(path, default_registry())
    mydl = Identity.module("mydl")
    assert custom.may_publish(mydl, "download.completed")
    assert not custom.may_publish(mydl, "download.completed.for_source")
    assert custom.registration_problems(mydl, "mydl", [("download.track", 7)]) == {}
    assert custom.is_admin(Identity.client("ops"))
    assert not custom.is_admin(CLI)


def test_admins_by_default_are_the_cli_only(policy: Policy) -> None:
    assert policy.is_admin(CLI)
    assert not policy.is_admin(LIBRARY)
    assert not policy.is_admin(None)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("modules: {lib: {capabilities: {import.track: 5000}}}", "modules.lib.capabilities"),
        ("modules: {Bad!: {capabilities: {}}}", "modules.Bad!"),
        ("publishers: {'download.*': [cli]}", "publishers.download.*"),
        ("publishers: {'Download': [spiffe://soulspot/client/cli]}", "publishers.Download"),
        ("admins: [spiffe://elsewhere/client/cli]", "admins"),
    ],
)
def test_a_bad_policy_file_names_the_entry(tmp_path: Path, text: str, names: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=rf"policy.yaml: {re.escape(names)}"):
        load_policy(path, default_registry())
