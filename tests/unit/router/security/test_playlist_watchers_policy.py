"""Who may manage playlist watches: clients and admins by the shipped policy, never a module;
the policy file's `playlist_watchers` names other identity kinds, and a bad value names it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from router.security.policy import PolicyError, load_policy
from services.kit.events.registry import default_registry
from services.kit.security.identity import CLI, Identity, Kind

if TYPE_CHECKING:
    from pathlib import Path

LIBRARY = Identity.module("library")
OTHER_CLIENT = Identity.client("phone")


def test_the_shipped_policy_lets_clients_and_no_module_watch_playlists() -> None:
    policy = load_policy(None, default_registry())
    assert policy.may_watch_playlists(CLI)
    assert policy.may_watch_playlists(OTHER_CLIENT)
    assert not policy.may_watch_playlists(LIBRARY)


def test_an_admin_module_may_watch_playlists_whatever_the_kinds(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps({"admins": [LIBRARY.uri], "playlist_watchers": []}))
    policy = load_policy(path, default_registry())
    assert policy.may_watch_playlists(LIBRARY)
    assert not policy.may_watch_playlists(CLI)


def test_a_file_without_the_kinds_sections_keeps_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps({"admins": []}))
    policy = load_policy(path, default_registry())
    assert policy.discovery_kinds == frozenset(Kind)
    assert policy.playlist_watcher_kinds == frozenset({Kind.CLIENT})


def test_a_bad_kind_names_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps({"playlist_watchers": ["robot"]}))
    with pytest.raises(PolicyError, match="playlist_watchers"):
        load_policy(path, default_registry())
