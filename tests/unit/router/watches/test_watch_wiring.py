"""Where a router's playlist watches live: SQLite with the SQLite bus, the shared JetStream KV
(with the router section's claim lease) with the JetStream bus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.settings import RouterSection, RouterSettings
from router.watches import create_watches
from router.watches.kv_store import KvWatchStore
from router.watches.store import SqliteWatchStore
from tests.helpers.kv_stores import NATS_REPLICAS, NATS_SERVERS, jetstream_router_settings

if TYPE_CHECKING:
    from pathlib import Path


def test_watches_live_in_sqlite_with_the_sqlite_bus(tmp_path: Path) -> None:
    watches = create_watches(RouterSettings(state_dir=tmp_path))
    assert isinstance(watches.store, SqliteWatchStore)


def test_watches_live_in_the_shared_kv_with_the_jetstream_bus(tmp_path: Path) -> None:
    settings = jetstream_router_settings(tmp_path, RouterSection(watch_lease_s=45.0))
    watches = create_watches(settings)
    assert isinstance(watches.store, KvWatchStore)
    assert watches.store.servers == NATS_SERVERS
    assert watches.store.replicas == NATS_REPLICAS
    assert watches.store.lease_s == 45.0
