"""Watched playlists in JetStream KV shared by two routers' stores on a real nats-server: what
one adds, changes or removes the other sees, a due watch is run by exactly one of two
schedulers, and a watch whose claimer stopped without letting go is run after the lease."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from router.watches.kv_store import KvWatchStore
from router.watches.scheduler import WatchScheduler
from router.watches.store import (
    RunRecord,
    WatchBusy,
    WatchClaimLost,
    WatchLimitReached,
    WatchRecord,
)
from tests.helpers.kv_stores import opened_stores
from tests.helpers.module_checks import eventually
from tests.helpers.pipeline_standin import until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.helpers.nats_server import NatsServerProcess

HOUR = 3600.0
DONE = RunRecord("Mix", "1 new tracks requested", False, 5, 1)


@pytest.fixture
async def two_stores(nats_server: NatsServerProcess) -> AsyncIterator[list[KvWatchStore]]:
    """Two routers' stores on one bucket, with a short lease."""
    async with opened_stores(
        KvWatchStore([nats_server.url], lease_s=1.5) for _ in range(2)
    ) as stores:
        yield stores


async def test_a_watch_added_through_one_router_is_listed_changed_and_removed_by_the_other(
    two_stores: list[KvWatchStore],
) -> None:
    first, second = two_stores
    now = time.time()
    record, created = await first.upsert("pl", 6 * HOUR, owner="cli", now=now, limit=5)
    assert created
    assert record.next_run_at == now

    assert [(w.playlist_id, w.every_s, w.owner) for w in await second.list_watches()] == [
        ("pl", 6 * HOUR, "cli")
    ]
    # A shorter interval through the second router; the first sees it.
    _, created = await second.upsert("pl", HOUR, owner="cli", now=now, limit=5)
    assert not created
    watch = await first.get("pl")
    assert watch is not None
    assert watch.every_s == HOUR

    await first.remember_tracks("pl", ["spotify:a", "spotify:b"], now)
    await second.remember_tracks("pl", ["spotify:a"], now + 10)
    await second.remember_tracks("pl", ["spotify:c"], now + 10, in_library=True)
    known = await first.known_tracks("pl")
    assert {k: (t.attempts, t.requested_at, t.in_library) for k, t in known.items()} == {
        "spotify:a": (2, now + 10, False),
        "spotify:b": (1, now, False),
        "spotify:c": (0, now + 10, True),
    }
    watch = await second.get("pl")
    assert watch is not None
    assert watch.tracks_known == 3

    removed = await second.remove("pl")
    assert removed is not None
    assert await first.list_watches() == []
    assert await first.get("pl") is None
    # Added again, it starts with no tracks known.
    await first.upsert("pl", HOUR, owner="cli", now=now, limit=5)
    assert await second.known_tracks("pl") == {}
    assert await second.remove("missing") is None


async def test_the_limit_counts_the_watches_of_every_router(
    two_stores: list[KvWatchStore],
) -> None:
    first, second = two_stores
    await first.upsert("a", HOUR, owner="", now=0.0, limit=2)
    await second.upsert("b", HOUR, owner="", now=0.0, limit=2)
    with pytest.raises(WatchLimitReached):
        await first.upsert("c", HOUR, owner="", now=0.0, limit=2)
    _, created = await second.upsert("a", 2 * HOUR, owner="", now=0.0, limit=2)
    assert not created


class GatedRuns:
    """A run_one that counts runs and holds each until the gate opens."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = asyncio.Event()

    async def __call__(self, watch: WatchRecord) -> RunRecord:
        self.ran.append(watch.playlist_id)
        await self.gate.wait()
        return DONE


async def test_a_due_watch_is_run_by_exactly_one_of_two_schedulers(
    two_stores: list[KvWatchStore],
) -> None:
    now = time.time()
    names = [f"pl{i}" for i in range(5)]
    for name in names:
        await two_stores[0].upsert(name, HOUR, owner="", now=now - 1, limit=10)
    runs = GatedRuns()
    schedulers = [WatchScheduler(store, runs) for store in two_stores]

    tasks = [asyncio.ensure_future(s.run_due()) for s in schedulers]
    # Every watch is claimed by one scheduler while its run is held open.
    await until(lambda: len(runs.ran) >= 1)
    runs.gate.set()
    ran = await asyncio.gather(*tasks)

    assert sorted(ran[0] + ran[1]) == names
    assert sorted(runs.ran) == names
    for name in names:
        watch = await two_stores[1].get(name)
        assert watch is not None
        assert watch.last_result == DONE.result
        assert watch.next_run_at > now + HOUR - 60
        assert watch.claim_owner == ""
    # Nothing is due any more on either router.
    assert await schedulers[0].run_due() == []
    assert await schedulers[1].run_due() == []


async def test_a_claim_held_by_a_live_router_is_renewed_and_its_watch_left_alone(
    nats_server: NatsServerProcess,
) -> None:
    holder = KvWatchStore([nats_server.url], lease_s=3.0)
    other = KvWatchStore([nats_server.url], lease_s=3.0)
    await holder.open()
    await other.open()
    try:
        await holder.upsert("pl", HOUR, owner="", now=time.time(), limit=5)
        claimed = await holder.claim("pl", now=time.time(), only_if_due=True)
        assert claimed is not None
        first_until = claimed.claim_until

        async def renewed() -> bool:
            watch = await other.get("pl")
            return watch is not None and watch.claim_until > first_until

        # Renewed (every lease / 3) past the claim first written: still the holder's.
        await eventually(renewed, within_s=20, what="the claim to be renewed")
        with pytest.raises(WatchBusy):
            await other.claim("pl", now=time.time())
        assert await WatchScheduler(other, GatedRuns()).run_due() == []
        # Letting go: the other router may run it at once.
        await holder.release("pl")
        assert await other.claim("pl", now=time.time()) is not None
    finally:
        await holder.close()
        await other.close()


async def test_a_claimed_run_whose_claimer_stops_is_picked_up_after_the_lease(
    two_stores: list[KvWatchStore],
) -> None:
    dead, alive = two_stores
    await dead.upsert("pl", HOUR, owner="", now=time.time() - 1, limit=5)
    assert await dead.claim("pl", now=time.time(), only_if_due=True) is not None
    # The claimer dies mid-run: no renewal, no release, no finish_run.
    for task in dead._renewals.values():
        task.cancel()
    dead._renewals.clear()

    runs = GatedRuns()
    runs.gate.set()
    scheduler = WatchScheduler(alive, runs)
    assert await scheduler.run_due() == []  # the claim is live: left alone
    watch = await alive.get("pl")
    assert watch is not None
    assert watch.claim_owner == dead.owner
    assert await scheduler.next_wakeup() == watch.claim_until

    async def taken_over() -> bool:
        return await scheduler.run_due() == ["pl"]

    await eventually(taken_over, within_s=20, what="the stale claim to be taken over")
    assert runs.ran == ["pl"]
    watch = await alive.get("pl")
    assert watch is not None
    assert watch.last_result == DONE.result
    assert watch.claim_owner == ""


async def test_closing_a_store_lets_go_of_its_claims(two_stores: list[KvWatchStore]) -> None:
    leaving, staying = two_stores
    await leaving.upsert("pl", HOUR, owner="", now=time.time(), limit=5)
    assert await leaving.claim("pl", now=time.time()) is not None
    with pytest.raises(WatchBusy):
        await staying.claim("pl", now=time.time())
    await leaving.close()
    assert await staying.claim("pl", now=time.time()) is not None


async def test_a_run_whose_claim_was_taken_over_writes_nothing(
    two_stores: list[KvWatchStore],
) -> None:
    stalled, taker = two_stores
    await stalled.upsert("pl", HOUR, owner="", now=time.time() - 1, limit=5)
    assert await stalled.claim("pl", now=time.time(), only_if_due=True) is not None
    # NATS away longer than the lease: the claim is not renewed and runs out.
    await stalled._stop_renewing("pl")

    async def taken() -> bool:
        try:
            return await taker.claim("pl", now=time.time(), only_if_due=True) is not None
        except WatchBusy:
            return False

    await eventually(taken, within_s=20, what="the lapsed claim to be taken")
    taken_record = await taker.get("pl")
    assert taken_record is not None
    assert taken_record.claim_owner == taker.owner

    # The stalled router comes back: its late writes are refused, the record left as it is.
    with pytest.raises(WatchClaimLost) as lost:
        await stalled.remember_tracks("pl", ["spotify:late"], time.time())
    assert lost.value.owner == taker.owner
    with pytest.raises(WatchClaimLost):
        await stalled.finish_run(
            "pl",
            RunRecord("", "the run failed: late", True, 0, 0),
            ended_at=time.time(),
            next_run_at=time.time() + 60,
        )
    after = await taker.get("pl")
    assert after is not None
    # Only the taker's renewal moves its claim on.
    assert replace(after, claim_until=0.0) == replace(taken_record, claim_until=0.0)
    assert await taker.known_tracks("pl") == {}
    assert "pl" not in stalled._claimed

    # The run holding the claim records its own result.
    finished = await taker.finish_run(
        "pl", DONE, ended_at=time.time(), next_run_at=time.time() + HOUR
    )
    assert finished is not None
    assert (finished.last_result, finished.failures, finished.claim_owner) == (DONE.result, 0, "")


async def test_a_scheduler_whose_claim_was_taken_over_counts_no_failure(
    two_stores: list[KvWatchStore],
) -> None:
    stalled, taker = two_stores
    await stalled.upsert("pl", HOUR, owner="", now=time.time() - 1, limit=5)
    taken_record: list[WatchRecord] = []

    async def run_one(watch: WatchRecord) -> RunRecord:
        # Mid-run the claim lapses (no renewal) and another router takes it.
        await stalled._stop_renewing(watch.playlist_id)

        async def taken() -> bool:
            try:
                claimed = await taker.claim(watch.playlist_id, now=time.time())
            except WatchBusy:
                return False
            assert claimed is not None
            taken_record.append(claimed)
            return True

        await eventually(taken, within_s=20, what="the lapsed claim to be taken")
        await stalled.remember_tracks(watch.playlist_id, ["spotify:late"], time.time())
        return DONE

    scheduler = WatchScheduler(stalled, run_one)
    assert await scheduler.run_due() == []
    after = await taker.get("pl")
    assert after is not None
    assert (after.claim_owner, after.failures, after.last_result) == (taker.owner, 0, "")
    assert after.next_run_at == taken_record[0].next_run_at
    assert await taker.known_tracks("pl") == {}
    assert "pl" not in stalled._claimed
    assert "pl" not in scheduler.running
