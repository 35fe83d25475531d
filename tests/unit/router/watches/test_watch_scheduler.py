"""The watch scheduler with a clock of the test's own: due watches run once, the next run is
counted from the run's end (missed intervals collapse into one run), failures back off."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest

from router.watches.scheduler import RETRY, WatchScheduler
from router.watches.store import RunRecord, SqliteWatchStore, WatchRecord

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

HOUR = 3600.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Runs:
    """A run_one recording which watches ran; each run takes `takes` seconds of the clock."""

    def __init__(self, clock: Clock, *, failed: bool = False, takes: float = 0.0) -> None:
        self.clock = clock
        self.failed = failed
        self.takes = takes
        self.ran: list[str] = []

    async def __call__(self, watch: WatchRecord) -> RunRecord:
        self.ran.append(watch.playlist_id)
        self.clock.now += self.takes
        if self.failed:
            return RunRecord("", "cannot read the playlist: UNAVAILABLE", True, 0, 0)
        return RunRecord("Mix", "1 new tracks requested", False, 5, 1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteWatchStore]:
    the_store = SqliteWatchStore(tmp_path / "watches.sqlite3")
    await the_store.open()
    yield the_store
    await the_store.close()


async def test_a_new_watch_runs_at_once_then_every_interval_from_the_run_end(
    store: SqliteWatchStore,
) -> None:
    clock = Clock()
    runs = Runs(clock, takes=10.0)
    scheduler = WatchScheduler(store, runs, clock=clock)
    await store.upsert("pl", 6 * HOUR, owner="", now=clock.now, limit=10)

    assert await scheduler.run_due() == ["pl"]
    watch = await store.get("pl")
    assert watch is not None
    assert watch.last_run_at == clock.now
    assert watch.next_run_at == clock.now + 6 * HOUR
    assert (watch.name, watch.last_result, watch.tracks_in_playlist) == (
        "Mix",
        "1 new tracks requested",
        5,
    )
    assert await scheduler.next_wakeup() == clock.now + 6 * HOUR

    clock.now += 6 * HOUR - 11
    assert await scheduler.run_due() == []  # not yet due
    clock.now += 11
    assert await scheduler.run_due() == ["pl"]
    assert runs.ran == ["pl", "pl"]


async def test_missed_intervals_run_once_not_once_each(store: SqliteWatchStore) -> None:
    clock = Clock()
    runs = Runs(clock)
    scheduler = WatchScheduler(store, runs, clock=clock)
    await store.upsert("pl", HOUR, owner="", now=clock.now, limit=10)
    await scheduler.run_due()
    # The router was down for ten intervals.
    clock.now += 10 * HOUR + 5

    assert await scheduler.run_due() == ["pl"]
    assert await scheduler.run_due() == []
    watch = await store.get("pl")
    assert watch is not None
    assert watch.next_run_at == clock.now + HOUR
    assert runs.ran == ["pl", "pl"]


async def test_only_due_watches_run_soonest_first(store: SqliteWatchStore) -> None:
    clock = Clock()
    runs = Runs(clock)
    scheduler = WatchScheduler(store, runs, clock=clock)
    await store.upsert("later", HOUR, owner="", now=clock.now + 50, limit=10)
    await store.upsert("soon", HOUR, owner="", now=clock.now - 20, limit=10)
    await store.upsert("sooner", HOUR, owner="", now=clock.now - 30, limit=10)

    assert await scheduler.run_due() == ["sooner", "soon"]
    assert await scheduler.next_wakeup() == clock.now + 50


async def test_a_failed_run_retries_through_the_backoff_never_later_than_the_interval(
    store: SqliteWatchStore,
) -> None:
    clock = Clock()
    runs = Runs(clock, failed=True)
    # fraction 1.0 - tiny: the equal-jitter wait is (almost) the ceiling, so the test knows it.
    scheduler = WatchScheduler(store, runs, clock=clock, rand=lambda: 0.999999)
    await store.upsert("pl", 6 * HOUR, owner="", now=clock.now, limit=10)

    waits = []
    for _ in range(8):
        await scheduler.run_due()
        watch = await store.get("pl")
        assert watch is not None
        assert watch.last_run_failed
        waits.append(watch.next_run_at - clock.now)
        clock.now = watch.next_run_at
    assert waits[0] == pytest.approx(RETRY.initial_s, rel=1e-3)
    assert waits[1] == pytest.approx(2 * RETRY.initial_s, rel=1e-3)
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    assert max(waits) <= RETRY.cap_s

    # A run that works again goes back to the interval.
    runs.failed = False
    await scheduler.run_due()
    watch = await store.get("pl")
    assert watch is not None
    assert not watch.last_run_failed
    assert watch.failures == 0
    assert watch.next_run_at == clock.now + 6 * HOUR


async def test_a_short_interval_caps_the_retry_wait(store: SqliteWatchStore) -> None:
    clock = Clock()
    scheduler = WatchScheduler(store, Runs(clock, failed=True), clock=clock, rand=lambda: 0.99)
    await store.upsert("pl", 300.0, owner="", now=clock.now, limit=10)
    for _ in range(10):
        await scheduler.run_due()
        watch = await store.get("pl")
        assert watch is not None
        assert watch.next_run_at - clock.now <= 300.0
        clock.now = watch.next_run_at


async def test_a_run_that_raises_is_recorded_as_failed_and_the_loop_goes_on(
    store: SqliteWatchStore,
) -> None:
    clock = Clock()

    async def broken(watch: WatchRecord) -> RunRecord:
        raise RuntimeError("boom")

    scheduler = WatchScheduler(store, broken, clock=clock)
    await store.upsert("pl", HOUR, owner="", now=clock.now, limit=10)
    assert await scheduler.run_due() == ["pl"]
    watch = await store.get("pl")
    assert watch is not None
    assert watch.last_run_failed
    assert "boom" in watch.last_result
    assert watch.next_run_at > clock.now


async def test_run_watch_runs_now_whatever_the_schedule_and_none_for_an_unknown_watch(
    store: SqliteWatchStore,
) -> None:
    clock = Clock()
    runs = Runs(clock)
    scheduler = WatchScheduler(store, runs, clock=clock)
    await store.upsert("pl", HOUR, owner="", now=clock.now + HOUR, limit=10)

    watch = await scheduler.run_watch("pl")
    assert watch is not None
    assert watch.last_run_at == clock.now
    assert runs.ran == ["pl"]
    assert await scheduler.run_watch("nope") is None
