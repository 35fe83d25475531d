"""The router's shared JetStream KV stores (the pipeline's runs, the playlist watches) as tests
use them: router settings that choose them, stores opened for a test and closed after it, and a
run created to work on."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol, TypeVar

from router.bus.settings import BusSettings
from router.settings import RouterSection, RouterSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence
    from pathlib import Path

    from router.pipeline import store as st
    from router.pipeline.kv_store import KvRunStore

# Addresses no test connects to: creating a store does not connect, only `open` does.
NATS_SERVERS = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
NATS_REPLICAS = 3


def jetstream_router_settings(tmp_path: Path, router: RouterSection) -> RouterSettings:
    """A router on the JetStream bus (`NATS_SERVERS`, `NATS_REPLICAS` copies of each bucket)."""
    return RouterSettings(
        state_dir=tmp_path,
        bus=BusSettings(
            backend="jetstream",
            nats_servers=list(NATS_SERVERS),
            nats_replicas=NATS_REPLICAS,
        ),
        router=router,
    )


class _Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


_S = TypeVar("_S", bound=_Store)


@contextlib.asynccontextmanager
async def opened_stores(stores: Iterable[_S]) -> AsyncIterator[list[_S]]:
    """Open each store in turn; on the way out close, in the same order, each one opened."""
    wanted = list(stores)
    opened: list[_S] = []
    try:
        for store in wanted:
            await store.open()
            opened.append(store)
        yield wanted
    finally:
        for store in opened:
            await store.close()


async def new_run(store: KvRunStore, event_id: str, steps: Sequence[st.NewStep]) -> str:
    """Create the run of `event_id` with `steps` through `store` (which must win it)."""
    run_id, created = await store.create_run(
        event_id=event_id,
        correlation_id="c",
        description="A - B",
        trigger=b"t",
        context={"steps": {}},
        steps=steps,
    )
    assert created
    return run_id
