"""The router's event bus: durable, validated, replayable publish/subscribe.

`create_bus()` returns an `EventBus`, the EventBusService servicer (Publish, PublishStream,
Subscribe, ListEvents, ReplayEvents, ListDeadLetters, GetDeadLetter, ReplayDeadLetters); the
router serves it, and its deprecated RouterService delegates the same RPCs to it
(streaming RPCs as async generator functions: `async for r in bus.Subscribe(it, ctx): yield r`,
which is how the kit's server interceptors recognise a streaming behaviour).

Payload size: the bus refuses a payload above `BusSettings.max_payload_bytes` (1 MiB) with
INVALID_ARGUMENT and a BadRequest violation on `event.payload.value`. The server must accept
larger messages than that for the bus to answer (the kit's servers allow 16 MiB); a message
above the gRPC limit itself is refused by gRPC with RESOURCE_EXHAUSTED before the bus sees it.

`python -m router.bus` serves the bus alone (SOULSPOT_ROUTER__ADDRESS, SOULSPOT_BUS__*).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from router.bus.event_bus import EventBus, cycle_parking
from router.bus.settings import BusSettings
from router.bus.sqlite_store import SqliteEventStore
from router.bus.store import EventStore

if TYPE_CHECKING:
    from services.kit.observability.metrics import MeshMetrics

__all__ = [
    "BusSettings",
    "EventBus",
    "EventStore",
    "SqliteEventStore",
    "create_bus",
    "cycle_parking",
    "tune_process_for_bus",
]

DB_NAME = "events.db"
# The store's threads give up the GIL on every call into SQLite and hand results back to
# the event loop; with the default 5 ms switch interval a busy loop can keep them (and
# every publish ack) waiting that long. Measured with bench/bus_bench.py.
SWITCH_INTERVAL_S = 0.0005


def tune_process_for_bus() -> None:
    """Process-wide settings for a process that hosts the bus (the router, `router.bus`)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def jetstream_store_for(settings: BusSettings) -> EventStore:
    """The JetStream store the settings name (backend "jetstream")."""
    from router.bus.jetstream_store import JetStreamEventStore

    return JetStreamEventStore(
        settings.nats_servers,
        stream=settings.nats_stream,
        replicas=settings.nats_replicas,
        synchronous=settings.synchronous,
        duplicate_window_s=settings.nats_duplicate_window_s,
        max_age_s=settings.retention_max_age_s,
        max_bytes=settings.retention_max_bytes,
        request_timeout_s=settings.nats_request_timeout_s,
        consumer_lease_s=settings.consumer_lease_s,
    )


def create_bus(
    settings: BusSettings | None = None,
    *,
    state_dir: Path | str | None = None,
    store: EventStore | None = None,
    source_module: str = "router",
    metrics: MeshMetrics | None = None,
) -> EventBus:
    """A bus over `store`, over JetStream when settings.backend is "jetstream" (see
    `router.bus.jetstream_store`), else over SQLite at settings.db_path or
    <state_dir>/events.db, counting on `metrics` (default: the process's
    `default_metrics()` when the bus starts).

    Call `await bus.start()` before serving and `await bus.stop()` after.
    """
    settings = settings or BusSettings()
    if store is None and settings.backend == "jetstream":
        store = jetstream_store_for(settings)
    if store is None:
        if settings.db_path:
            path = Path(settings.db_path)
        elif state_dir is not None:
            path = Path(state_dir) / DB_NAME
        else:
            raise ValueError("create_bus needs settings.db_path, state_dir or a store")
        store = SqliteEventStore(path, synchronous=settings.synchronous)
    return EventBus(store, settings, source_module=source_module, metrics=metrics)
