"""The router's event bus: durable, validated, replayable publish/subscribe.

`create_bus()` returns an `EventBus` whose methods are the RouterService bus RPCs (Publish,
PublishStream, Subscribe, ListEvents, ReplayEvents, ListDeadLetters, GetDeadLetter,
ReplayDeadLetters) with grpc.aio servicer signatures; the router delegates them to it.
"""

from __future__ import annotations

from pathlib import Path

from router.bus.service import EventBus, cycle_parking
from router.bus.settings import BusSettings
from router.bus.sqlite_store import SqliteEventStore
from router.bus.store import EventStore

__all__ = [
    "BusSettings",
    "EventBus",
    "EventStore",
    "SqliteEventStore",
    "create_bus",
    "cycle_parking",
]

DB_NAME = "events.db"


def create_bus(
    settings: BusSettings | None = None,
    *,
    state_dir: Path | str | None = None,
    store: EventStore | None = None,
    source_module: str = "router",
) -> EventBus:
    """A bus over `store`, or over SQLite at settings.db_path or <state_dir>/events.db.

    Call `await bus.start()` before serving and `await bus.stop()` after.
    """
    settings = settings or BusSettings()
    if store is None:
        if settings.db_path:
            path = Path(settings.db_path)
        elif state_dir is not None:
            path = Path(state_dir) / DB_NAME
        else:
            raise ValueError("create_bus needs settings.db_path, state_dir or a store")
        store = SqliteEventStore(path)
    return EventBus(store, settings, source_module=source_module)
