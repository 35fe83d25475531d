"""When watches run: each at its next run time, one run per watch at a time.

A run's next one is counted from when it ended, so a router that was down across several
intervals runs a missed watch once soon after start, not once per missed interval. A failed
run (no playlist module, the playlist unreadable) is retried sooner, through the one backoff,
but never later than the watch's own interval. The clock is injected: tests drive `run_due`
and `next_wakeup` with a clock of their own and never sleep.

Several routers sharing one store (KvWatchStore) each run a scheduler over the same watches:
a run starts with the store's claim, so a due watch is run by the one router whose claim won;
the others skip it (WatchBusy) and look again when its next run is due or the claim runs out.
A run whose claim ran out and went to another router (WatchClaimLost) is over here: it is
logged, nothing of it is written and no failure is counted; the router holding the claim
records its own run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from router.watches.store import RunRecord, WatchBusy, WatchClaimLost
from services.kit.support.backoff import BackoffPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from router.watches.store import WatchRecord, WatchStore

_log = logging.getLogger("router.watches")

# A failed run is tried again after 1, 2, 4 ... minutes, at most an hour (and at most the
# watch's interval).
RETRY = BackoffPolicy(initial_s=60.0, multiplier=2.0, cap_s=3600.0, jitter="equal")
# The longest the loop sleeps without looking at the store again (a safety net for a clock
# that jumps; every change through this router's service, and every change through another
# router that the shared store reports, wakes it at once anyway).
MAX_SLEEP_S = 300.0
# How often a manual run asks again for a watch another router is running.
BUSY_POLL_S = 0.5


class WatchScheduler:
    """Runs due watches through `run_one`, records each result and the next run."""

    def __init__(
        self,
        store: WatchStore,
        run_one: Callable[[WatchRecord], Awaitable[RunRecord]],
        *,
        clock: Callable[[], float] = time.time,
        retry: BackoffPolicy = RETRY,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._run_one = run_one
        self._clock = clock
        self._retry = retry
        self._rand = rand
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self.running: set[str] = set()

    def wake(self) -> None:
        """Look at the store again now (a watch was added, changed or removed)."""
        self._wake.set()

    def next_run_after(self, watch: WatchRecord, run: RunRecord, ended_at: float) -> float:
        """When the watch runs next after this run."""
        if not run.failed:
            return ended_at + watch.every_s
        fraction = None if self._rand is None else self._rand()
        wait = self._retry.delay(watch.failures, fraction)
        return ended_at + min(watch.every_s, wait)

    async def run_watch(self, playlist_id: str, *, only_if_due: bool = False) -> WatchRecord | None:
        """Run one watch now (after any run of it in progress); the watch as it then is, or
        None when it is gone (or, with `only_if_due`, was not due any more or another router
        took the run over)."""
        lock = self._locks.setdefault(playlist_id, asyncio.Lock())
        async with lock:
            watch = await self._claim(playlist_id, only_if_due=only_if_due)
            if watch is None:
                if await self._store.get(playlist_id) is None:
                    self._locks.pop(playlist_id, None)
                return None
            self.running.add(playlist_id)
            finished = False
            try:
                try:
                    run = await self._run_one(watch)
                except WatchClaimLost:
                    raise
                except Exception as err:
                    # One watch's failure must not stop the others.
                    _log.exception("watch of %s failed", playlist_id)
                    run = RunRecord("", f"the run failed: {err}", True, 0, 0)
                ended = self._clock()
                record = await self._store.finish_run(
                    playlist_id,
                    run,
                    ended_at=ended,
                    next_run_at=self.next_run_after(watch, run, ended),
                )
                finished = True
                return record
            except WatchClaimLost as lost:
                # Not finished: `release` below stops the renewal and forgets the claim,
                # leaving the record, whose claim is another router's, as it is.
                _log.warning(
                    "playlist watch %s: %s; its run here is over",
                    playlist_id,
                    lost,
                    extra={"playlist_id": playlist_id},
                )
                # A manual run answers with the watch as the other router's run leaves it.
                return None if only_if_due else await self._store.get(playlist_id)
            finally:
                self.running.discard(playlist_id)
                if not finished:
                    # Cut short (the router stops, the caller went): another router may run
                    # it now rather than after the claim's lease.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._store.release(playlist_id))

    async def _claim(self, playlist_id: str, *, only_if_due: bool) -> WatchRecord | None:
        """The store's claim; a scheduled run skips a watch another router is running, a
        manual one waits for that run to end, then runs it again."""
        while True:
            try:
                return await self._store.claim(
                    playlist_id, now=self._clock(), only_if_due=only_if_due
                )
            except WatchBusy:
                if only_if_due:
                    return None
            await asyncio.sleep(BUSY_POLL_S)

    async def run_due(self) -> list[str]:
        """Run every watch due now, soonest first; the playlist ids run."""
        now = self._clock()
        ran = []
        for watch in await self._store.list_watches():
            if watch.next_run_at > now:
                break
            if watch.claimed_at(now):
                continue  # another router (or a manual run here) is running it
            if await self.run_watch(watch.playlist_id, only_if_due=True) is not None:
                ran.append(watch.playlist_id)
        return ran

    async def next_wakeup(self) -> float | None:
        """When the soonest watch is due, or a claim on a due one runs out (None: no
        watches)."""
        watches = await self._store.list_watches()
        return min((w.due_at() for w in watches), default=None)

    async def serve(self) -> None:
        """Run watches as they fall due, until cancelled; woken by the store when another
        router adds a watch or makes one due sooner."""
        self._store.on_change(self.wake)
        while True:
            self._wake.clear()
            try:
                await self.run_due()
                due = await self.next_wakeup()
            except Exception:
                _log.exception("could not run the due playlist watches")
                due = self._clock() + self._retry.initial_s
            sleep_s = MAX_SLEEP_S if due is None else min(MAX_SLEEP_S, due - self._clock())
            if sleep_s <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep_s):
                    await self._wake.wait()
