"""Replaying many dead letters: all delivered, while the consumer holds at most a page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.bus.store import Parking
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import (
    BusHarness,
    RawSubscriber,
    bus_settings,
    completed,
    envelope,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

PAGE = 32


async def _park_many(harness: BusHarness, consumer: str, count: int) -> list[int]:
    """`count` events in the log, each a dead letter of `consumer` (as after max attempts)."""
    store = harness.bus.store
    seqs: list[int] = []
    for start in range(0, count, 500):
        batch = [envelope(completed(f"d{i}")) for i in range(start, min(count, start + 500))]
        results = await store.append(batch, [None] * len(batch))
        seqs.extend(r.sequence for r in results)
    for seq in seqs:
        store.park(consumer, seq, router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS, 3, "boom")

    async def all_parked() -> bool:
        return await store.count_dead_letters() == count

    await wait_for(all_parked)
    return seqs


async def _replays_left(harness: BusHarness, consumer: str) -> int:
    record = await harness.bus.store.load_consumer(consumer)
    return record.replays if record is not None else -1


async def test_replaying_many_dead_letters_delivers_all_with_a_bounded_buffer(
    tmp_path: Path,
) -> None:
    async with BusHarness(tmp_path, bus_settings(page_size=PAGE)) as harness:
        seqs = await _park_many(harness, "bulk", 2000)
        async with RawSubscriber(
            harness.stub,
            "bulk",
            ["download.*"],
            start=router_pb2.START_POSITION_NEW,
            max_in_flight=64,
        ) as sub:
            answer = await harness.stub.ReplayDeadLetters(
                router_pb2.ReplayDeadLettersRequest(consumer="bulk"), timeout=10
            )
            assert answer.replayed == 2000
            got = await sub.take(2000, within_s=40)
            assert sorted(d.event.sequence for d in got) == seqs
            assert all(d.attempt == 1 for d in got)
            consumer = harness.bus.consumers["bulk"]
            # Read from the store a page at a time: never more than a page in memory.
            assert 0 < consumer.stats.replays_buffered_max <= PAGE
            await wait_for(lambda: consumer.replays_buffered == 0)

            async def drained() -> bool:
                return await _replays_left(harness, "bulk") == 0

            await wait_for(drained)
            assert await sub.nothing_within(0.2)
        left = await harness.stub.ListDeadLetters(router_pb2.ListDeadLettersRequest())
        assert list(left.dead_letters) == []


async def test_replays_queued_before_the_consumer_loads_are_paged_in(tmp_path: Path) -> None:
    async with BusHarness(tmp_path, bus_settings(page_size=16)) as harness:
        seqs = await _park_many(harness, "late", 300)
        # The consumer as it was left by an earlier run of the router (not loaded now).
        await harness.bus.store.save_consumer("late", ["download.*"], seqs[-1])
        # Cycle-guard dead letters are never taken by a consumer replay.
        await harness.bus.store.append(
            [envelope(completed("loop"))],
            [Parking(router_pb2.DEAD_LETTER_REASON_CYCLE, "loop")],
        )
        answer = await harness.stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(consumer="late"), timeout=10
        )
        assert answer.replayed == 300
        assert await _replays_left(harness, "late") == 300
        assert "late" not in harness.bus.consumers
        async with RawSubscriber(
            harness.stub, "late", ["download.*"], start=router_pb2.START_POSITION_NEW
        ) as sub:
            got = await sub.take(300, within_s=20)
            assert sorted(d.event.sequence for d in got) == seqs
            consumer = harness.bus.consumers["late"]
            assert 0 < consumer.stats.replays_buffered_max <= 16
        left = await harness.stub.ListDeadLetters(router_pb2.ListDeadLettersRequest())
        assert [d.reason for d in left.dead_letters] == [router_pb2.DEAD_LETTER_REASON_CYCLE]


async def test_a_dead_letter_replays_after_retention_removed_its_event(tmp_path: Path) -> None:
    async with BusHarness(tmp_path) as harness:
        store = harness.bus.store
        (seq,) = await _park_many(harness, "late", 1)
        parked = (await store.list_dead_letters("late", 10))[0].envelope
        assert await store.apply_retention(0.0, 0) == 1  # the log forgets the event
        assert (await store.read_after(0, 10)).events == []
        async with RawSubscriber(
            harness.stub,
            "late",
            ["download.*"],
            start=router_pb2.START_POSITION_NEW,
            max_attempts=1,
            auto_ack=False,
        ) as sub:
            answer = await harness.stub.ReplayDeadLetters(
                router_pb2.ReplayDeadLettersRequest(consumer="late"), timeout=10
            )
            assert answer.replayed == 1
            got = await sub.next()
            assert got.event == parked
            # Failing again parks it again, from the replay's copy: still not lost.
            sub.nack(got.delivery_id)

            async def parked_again() -> bool:
                return await store.count_dead_letters() == 1

            await wait_for(parked_again)
        (again,) = await store.list_dead_letters("late", 10)
        assert again.sequence == seq
        assert again.envelope == parked
