"""Listings of the pipeline's JetStream KV on a real nats-server never miss a key just written
through another router's store: the deferred index (keys with values) and the runs (keys only).

nats-py's keys() and watch could end their first pass before a key just written arrived (an
empty or short listing, about once in a hundred rounds); a missed lease or index entry is taken
for a router gone or a step not deferred."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from router.pipeline import store as st
from router.pipeline.kv_store import KvRunStore
from tests.helpers.kv_stores import new_run, opened_stores

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.helpers.nats_server import NatsServerProcess

STEPS = [st.NewStep("import.track", "import.track", True)]


@pytest.fixture
async def two_stores(nats_server: NatsServerProcess) -> AsyncIterator[list[KvRunStore]]:
    """Two stores under one owner name (a router and the same router restarted), so each
    lists the other's deferred index."""
    async with opened_stores(
        KvRunStore([nats_server.url], owner="router-a") for _ in range(2)
    ) as stores:
        yield stores


async def test_a_step_just_deferred_through_one_store_is_listed_by_the_other(
    two_stores: list[KvRunStore],
) -> None:
    first, second = two_stores
    missed = []
    for i in range(300):
        run_id = await new_run(first, f"ev-{i}", STEPS)
        await first.step_finished(run_id, 0, st.STEP_DEFERRED)
        listed = await second.deferred()
        if listed != [(run_id, 0, "import.track")]:
            missed.append((i, listed))
        # Out of the index again, so each round's listing holds one entry.
        await first.step_finished(run_id, 0, st.STEP_SUCCEEDED)
    assert missed == []


async def test_a_run_just_created_through_one_store_is_listed_by_the_other(
    two_stores: list[KvRunStore],
) -> None:
    first, second = two_stores
    created: list[str] = []
    missed = []
    for i in range(60):
        created.append(await new_run(first, f"ev-{i}", STEPS))
        listed = {r.run_id for r in await second.list_runs(limit=1000)}
        if listed != set(created):
            missed.append((i, sorted(set(created) - listed)))
    assert missed == []
