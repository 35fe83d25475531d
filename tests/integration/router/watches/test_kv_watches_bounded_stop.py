"""The playlist watches on a JetStream KV store stop within a bound when one of their loops
lost a cancellation in a NATS request (as nats-py's can on Python 3.11): the scheduler, a
claim's renewal and the feed of watch changes each end, cancelled again, and what stopping
does after them (letting claims go, deleting the feed's consumer) is still done."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from router.watches.kv_changes import WatchChangeFeed
from router.watches.kv_store import KvWatchStore
from router.watches.service import PlaylistWatches
from tests.helpers.kv_stores import opened_stores
from tests.helpers.lost_cancellation import LosingOneCancellation, ended_within

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.helpers.nats_server import NatsServerProcess

# Far below the per-test timeout, above a stop's own bounds (a few seconds): a stop that waits
# on a loop forever fails here instead of hanging the suite.
STOP_WITHIN_S = 20.0
WAIT_S = 10.0
HOUR = 3600.0


async def test_a_scheduler_that_lost_its_cancellation_does_not_hold_the_stop(
    nats_server: NatsServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KvWatchStore([nats_server.url])
    listing = LosingOneCancellation(store.list_watches)
    monkeypatch.setattr(store, "list_watches", listing)
    watches = PlaylistWatches(tmp_path, store=store)
    # No watch runs, so no call reaches this address; the scheduler lists at once.
    await watches.start("127.0.0.1:1")
    try:
        await ended_within(listing.entered.wait(), WAIT_S)
    except BaseException:
        await watches.stop()
        raise
    await ended_within(watches.stop(), STOP_WITHIN_S)
    assert listing.lost.is_set()


async def test_a_claim_renewal_that_lost_its_cancellation_does_not_hold_the_close(
    nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened_stores([KvWatchStore([nats_server.url])]) as (other,):
        store = KvWatchStore([nats_server.url], lease_s=0.3)  # renewed every 0.1 s
        await store.open()
        renew = LosingOneCancellation(store._renew)
        monkeypatch.setattr(store, "_renew", renew)
        await store.upsert("pl", HOUR, owner="", now=time.time(), limit=5)
        assert await store.claim("pl", now=time.time()) is not None
        await ended_within(renew.entered.wait(), WAIT_S)

        await ended_within(store.close(), STOP_WITHIN_S)

        assert renew.lost.is_set()
        # The claim was let go, not left to run out.
        watch = await other.get("pl")
        assert watch is not None
        assert watch.claim_owner == ""


async def test_a_change_feed_that_lost_its_cancellation_stops_and_deletes_its_consumer(
    nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened_stores([KvWatchStore([nats_server.url])]) as (store,):
        assert store._nc is not None
        js = store._nc.jetstream()
        adding = LosingOneCancellation(js.add_consumer)
        monkeypatch.setattr(js, "add_consumer", adding)
        feed = WatchChangeFeed(
            js, store.bucket, "watches.*", due_of=lambda _v: 0.0, wake=lambda: None
        )
        feed.start()
        try:
            await ended_within(adding.entered.wait(), WAIT_S)
        except BaseException:
            await feed.stop()
            raise

        await ended_within(feed.stop(), STOP_WITHIN_S)

        assert adding.lost.is_set()
        assert feed.consumers_made == 1  # the lost cancellation let it make its consumer
        assert await js.consumers_info(f"KV_{store.bucket}") == []
