"""The index of deferred steps in the pipeline's JetStream KV: a sweep lists this router's
deferred steps without reading a run, the index follows the runs (a deferred step appears, a
finished one goes, a run taken over moves to its new owner's index), a wrong entry is
dropped when the run is read, and a router restarted under its owner name rebuilds its own."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from router.pipeline import store as st
from router.pipeline.kv_store import KvRunStore
from tests.helpers.kv_stores import new_run, opened_stores

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.helpers.nats_server import NatsServerProcess

STEPS = [
    st.NewStep("enrich.metadata", "enrich.metadata", False),
    st.NewStep("import.track", "import.track", True),
]


@pytest.fixture
async def store(nats_server: NatsServerProcess) -> AsyncIterator[KvRunStore]:
    async with opened_stores([KvRunStore([nats_server.url])]) as (the_store,):
        yield the_store


async def test_a_sweep_lists_deferred_steps_oldest_first_without_reading_a_run(
    store: KvRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [await new_run(store, f"ev-{i}", STEPS) for i in range(4)]
    await store.step_finished(runs[2], 0, st.STEP_DEFERRED)
    await store.step_finished(runs[0], 0, st.STEP_DEFERRED)
    await store.step_finished(runs[0], 1, st.STEP_DEFERRED)
    await store.step_finished(runs[1], 0, st.STEP_SUCCEEDED)

    async def no_run_reads(run_id: str) -> None:
        raise AssertionError(f"the sweep read run {run_id}")

    with monkeypatch.context() as patched:
        patched.setattr(store, "_entry", no_run_reads)
        listed = await store.deferred()
    assert listed == [
        (runs[0], 0, "enrich.metadata"),
        (runs[0], 1, "import.track"),
        (runs[2], 0, "enrich.metadata"),
    ]

    # A deferred step that ran leaves the index; the run's other one stays.
    await store.step_finished(runs[0], 0, st.STEP_SUCCEEDED)
    await store.step_finished(runs[2], 0, st.STEP_SKIPPED)
    assert await store.deferred() == [(runs[0], 1, "import.track")]


async def test_a_run_taken_over_moves_to_the_new_owners_index(
    nats_server: NatsServerProcess,
) -> None:
    dead = KvRunStore([nats_server.url])
    heir = KvRunStore([nats_server.url], lease_s=0.5)
    await dead.open()
    await heir.open()
    try:
        run_id = await new_run(dead, "ev-heir", STEPS)
        await dead.step_finished(run_id, 0, st.STEP_DEFERRED)
        await dead.set_state(run_id, st.RUN_COMPLETED)
        assert await dead.deferred() == [(run_id, 0, "enrich.metadata")]
        assert await heir.deferred() == []
        await dead.close()  # its lease goes: the heir takes the deferred run

        assert await heir.take_over() == [run_id]
        assert await heir.deferred() == [(run_id, 0, "enrich.metadata")]
        # The gone router's entries went with it.
        assert await dead_index(heir, dead.owner) == []
    finally:
        await heir.close()


async def dead_index(reader: KvRunStore, owner: str) -> list[tuple[str, int, str]]:
    """`owner`'s index, as a store of that owner name would list it."""
    ghost = KvRunStore(reader.servers, owner=owner)
    # The same bucket and connection, without a lease of its own.
    ghost._nc, ghost._kv = reader._nc, reader._kv
    return await ghost.deferred()


async def test_an_entry_for_a_run_that_moved_is_dropped_when_the_run_is_read(
    nats_server: NatsServerProcess,
) -> None:
    stalled = KvRunStore([nats_server.url], lease_s=3600.0)
    other = KvRunStore([nats_server.url], lease_s=0.2)
    await stalled.open()
    await other.open()
    try:
        run_id = await new_run(stalled, "ev-stalled", STEPS)
        await stalled.step_finished(run_id, 0, st.STEP_DEFERRED)
        assert await stalled.deferred() == [(run_id, 0, "enrich.metadata")]
        # The other router finds the stalled one's lease standing still and takes the run.
        taken: list[str] = []
        async with asyncio.timeout(10):
            while not taken:
                taken = await other.take_over()
                if not taken:
                    await _lease_still(other)
        # Its index went with its dead lease; the heir indexed the run as its own.
        assert await stalled.deferred() == []
        assert await other.deferred() == [(run_id, 0, "enrich.metadata")]
        # The stalled router wakes and finishes the index write it was in the middle of.
        record = await other.get(run_id)
        assert record is not None
        await stalled._index(record, stalled.owner, [])
        assert await stalled.deferred() == [(run_id, 0, "enrich.metadata")]
        # Reading the run (as the engine does before a deferred step) drops the entry.
        await stalled.get(run_id)
        assert await stalled.deferred() == []
        assert await other.deferred() == [(run_id, 0, "enrich.metadata")]
    finally:
        await stalled.close()
        await other.close()


async def _lease_still(store: KvRunStore) -> None:
    """Wait out the store's lease_s, so a lease that did not move meanwhile is stale."""
    await asyncio.sleep(store.lease_s)


async def test_a_router_restarted_under_its_owner_name_rebuilds_its_index(
    nats_server: NatsServerProcess,
) -> None:
    first = KvRunStore([nats_server.url], owner="router-a")
    await first.open()
    run_id = await new_run(first, "ev-restart", STEPS)
    await first.step_finished(run_id, 1, st.STEP_DEFERRED)
    await first.close()  # its index goes with it

    again = KvRunStore([nats_server.url], owner="router-a")
    await again.open()
    try:
        assert await again.deferred() == []
        await again.take_over()  # the first scan at start
        assert await again.deferred() == [(run_id, 1, "import.track")]
    finally:
        await again.close()
