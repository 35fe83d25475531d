from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from soulspot.router.v1 import router_pb2
from tests.helpers.bus import (
    BusHarness,
    RawSubscriber,
    bus_settings,
    completed,
    envelope,
    started,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path


async def test_deliveries_follow_patterns_in_log_order(harness: BusHarness) -> None:
    async with RawSubscriber(harness.stub, "c1", ["download.completed"]) as sub:
        sent = []
        for i in range(20):
            env = envelope(completed(f"d{i}") if i % 2 else started(f"d{i}"))
            await harness.publish(env)
            if i % 2:
                sent.append(env.event_id)
        got = await sub.take(10)
    assert [d.event.event_id for d in got] == sent
    assert all(d.attempt == 1 for d in got)
    seqs = [d.event.sequence for d in got]
    assert seqs == sorted(seqs)


async def test_start_new_skips_the_past_and_bad_starts_are_refused(harness: BusHarness) -> None:
    await harness.publish(envelope(completed("old")))
    async with RawSubscriber(
        harness.stub, "fresh", ["*"], start=router_pb2.START_POSITION_NEW
    ) as sub:
        new = envelope(completed("new"))
        await harness.publish(new)
        assert (await sub.next()).event.event_id == new.event_id
    bad = RawSubscriber(harness.stub, "", ["download..x"])
    task = asyncio.create_task(bad._run())
    await asyncio.wait_for(task, 5)
    assert bad.error is not None
    assert bad.error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_durable_consumer_resumes_after_its_last_ack(harness: BusHarness) -> None:
    async with RawSubscriber(harness.stub, "durable", ["download.*"]) as sub:
        for i in range(3):
            await harness.publish(envelope(completed(f"a{i}")))
        await sub.take(3)
        await wait_for(lambda: harness.bus.consumers["durable"].floor == 3)
    for i in range(3):
        await harness.publish(envelope(completed(f"b{i}")))
    async with RawSubscriber(harness.stub, "durable", ["download.*"]) as sub:
        assert sub.acked_sequence == 3
        got = await sub.take(3)
        assert [d.event.sequence for d in got] == [4, 5, 6]
        assert await sub.nothing_within(0.2)


async def test_nack_redelivers_and_poison_goes_to_dead_letters(harness: BusHarness) -> None:
    poison = envelope(completed("poison"))
    async with RawSubscriber(
        harness.stub, "worker", ["download.completed"], auto_ack=False, max_attempts=3
    ) as sub:
        await harness.publish(poison)
        for attempt in (1, 2, 3):
            d = await sub.next()
            assert d.event.event_id == poison.event_id
            assert d.attempt == attempt
            sub.nack(d.delivery_id, reason=f"boom {attempt}")
        later = envelope(completed("later"))
        await harness.publish(later)
        d = await sub.next()
        assert d.event.event_id == later.event_id
        sub.ack(d.delivery_id)
        await wait_for(lambda: harness.stub.ListDeadLetters(router_pb2.ListDeadLettersRequest()))
        letters = (
            await harness.stub.ListDeadLetters(router_pb2.ListDeadLettersRequest(consumer="worker"))
        ).dead_letters
        assert len(letters) == 1
        letter = letters[0]
        assert letter.reason == router_pb2.DEAD_LETTER_REASON_MAX_ATTEMPTS
        assert letter.attempts == 3
        assert letter.last_error == "boom 3"
        assert letter.event.event_id == poison.event_id
        shown = await harness.stub.GetDeadLetter(
            router_pb2.GetDeadLetterRequest(dead_letter_id=letter.dead_letter_id)
        )
        assert shown.dead_letter.event.event_id == poison.event_id
        replayed = await harness.stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(consumer="worker")
        )
        assert replayed.replayed == 1
        again = await sub.next()
        assert again.event.event_id == poison.event_id
        assert again.attempt == 1
        sub.ack(again.delivery_id)
    left = await harness.stub.ListDeadLetters(router_pb2.ListDeadLettersRequest())
    assert list(left.dead_letters) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.GetDeadLetter(router_pb2.GetDeadLetterRequest(dead_letter_id=99))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unacked_delivery_is_redelivered_after_the_ack_timeout(harness: BusHarness) -> None:
    async with RawSubscriber(harness.stub, "slow", ["*"], auto_ack=False, ack_timeout_s=0.2) as sub:
        env = envelope(completed())
        await harness.publish(env)
        first = await sub.next()
        second = await sub.next(3)
        assert second.event.event_id == env.event_id
        assert second.attempt == 2
        sub.ack(first.delivery_id)  # stale: ignored
        sub.ack(second.delivery_id)
        assert await sub.nothing_within(0.4)


async def test_in_progress_keeps_a_long_delivery(harness: BusHarness) -> None:
    async with RawSubscriber(harness.stub, "long", ["*"], auto_ack=False, ack_timeout_s=0.3) as sub:
        await harness.publish(envelope(completed()))
        d = await sub.next()
        for _ in range(5):
            await asyncio.sleep(0.1)
            sub.in_progress(d.delivery_id)
        assert await sub.nothing_within(0.1)
        sub.ack(d.delivery_id)


async def test_in_progress_extends_only_its_own_delivery(harness: BusHarness) -> None:
    # The older delivery is kept alive; the newer one, never extended, must still expire on
    # time (the extended one no longer stands first in the stream's deadline order).
    async with RawSubscriber(harness.stub, "two", ["*"], auto_ack=False, ack_timeout_s=0.4) as sub:
        await harness.publish(envelope(completed("kept")))
        await harness.publish(envelope(completed("dropped")))
        kept, dropped = await sub.take(2)
        for _ in range(10):
            sub.in_progress(kept.delivery_id)
            await asyncio.sleep(0.1)
        again = sub.received[2:]
        assert again, "the delivery that was not extended was never redelivered"
        assert {d.event.event_id for d in again} == {dropped.event.event_id}
        assert again[0].attempt == 2
        sub.ack(kept.delivery_id)


async def test_each_subscriber_keeps_its_own_ack_timeout(harness: BusHarness) -> None:
    async with (
        RawSubscriber(
            harness.stub, "mixed", ["*"], auto_ack=False, max_in_flight=1, ack_timeout_s=30
        ) as patient,
        RawSubscriber(
            harness.stub, "mixed", ["*"], auto_ack=False, max_in_flight=1, ack_timeout_s=0.3
        ) as hasty,
    ):
        await harness.publish(envelope(completed("a")))
        await harness.publish(envelope(completed("b")))
        slow = await patient.next()
        quick = await hasty.next()
        # The hasty subscriber's delivery times out and comes back (to it: the patient one
        # is still busy); the patient one's, under a 30 s timeout, does not.
        again = await hasty.next(3)
        assert (again.event.event_id, again.attempt) == (quick.event.event_id, 2)
        assert await patient.nothing_within(0.6)
        patient.ack(slow.delivery_id)
        hasty.ack(again.delivery_id)


async def test_an_ack_batch_acks_every_delivery_it_names(harness: BusHarness) -> None:
    async with RawSubscriber(
        harness.stub, "batch", ["*"], auto_ack=False, ack_timeout_s=0.3
    ) as sub:
        for i in range(5):
            await harness.publish(envelope(completed(f"d{i}")))
        got = await sub.take(5)
        ids = [d.delivery_id for d in got]
        # A repeated id and an unknown one change nothing; the last delivery stays unacked.
        sub.ack_batch([*ids[:4], ids[0], 999_999])
        again = await sub.next(3)
        assert (again.event.event_id, again.attempt) == (got[4].event.event_id, 2)
        consumer = harness.bus.consumers["batch"]
        await wait_for(lambda: consumer.floor == got[3].event.sequence)
        sub.ack_batch([again.delivery_id])
        await wait_for(lambda: consumer.floor == got[4].event.sequence)
        assert await sub.nothing_within(0.5)
        assert consumer.stats.acked == 5


async def test_max_in_flight_bounds_unacked_deliveries(harness: BusHarness) -> None:
    async with RawSubscriber(
        harness.stub, "bounded", ["*"], auto_ack=False, max_in_flight=3
    ) as sub:
        for i in range(10):
            await harness.publish(envelope(completed(f"d{i}")))
        got = await sub.take(3)
        assert await sub.nothing_within(0.2)
        sub.ack(got[0].delivery_id)
        nxt = await sub.next()
        assert nxt.event.sequence == 4


async def test_subscribers_sharing_a_name_compete(harness: BusHarness) -> None:
    async with (
        RawSubscriber(harness.stub, "queue", ["*"], max_in_flight=1, auto_ack=False) as a,
        RawSubscriber(harness.stub, "queue", ["*"], max_in_flight=1, auto_ack=False) as b,
    ):
        for i in range(2):
            await harness.publish(envelope(completed(f"d{i}")))
        da = await a.next()
        db = await b.next()
        assert {da.event.sequence, db.event.sequence} == {1, 2}
        a.ack(da.delivery_id)
        b.ack(db.delivery_id)
        assert await a.nothing_within(0.1)
        assert await b.nothing_within(0.1)


async def test_causation_cycle_and_depth_are_parked_and_the_rest_flows(
    harness: BusHarness,
) -> None:
    async with RawSubscriber(harness.stub, "guarded", ["*"]) as sub:
        loop_env = envelope(
            completed("loop"),
            source="soulseek",
            chain=[("download.completed", "soulseek"), ("track.ready", "router")],
        )
        deep_env = envelope(completed("deep"), chain=[(f"t{i}.x", f"m{i}") for i in range(17)])
        fine = envelope(completed("fine"), chain=[("track.ready", "router")])
        for env in (loop_env, deep_env, fine):
            answer = await harness.publish(env)
            assert answer.sequence > 0
        d = await sub.next()
        assert d.event.event_id == fine.event_id
        assert await sub.nothing_within(0.2)
    letters = (await harness.stub.ListDeadLetters(router_pb2.ListDeadLettersRequest())).dead_letters
    reasons = {dl.event.event_id: dl.reason for dl in letters}
    assert reasons == {
        loop_env.event_id: router_pb2.DEAD_LETTER_REASON_CYCLE,
        deep_env.event_id: router_pb2.DEAD_LETTER_REASON_DEPTH,
    }
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(dead_letter_ids=[letters[0].dead_letter_id])
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_state_survives_a_bus_restart(tmp_path: Path) -> None:
    async with (
        BusHarness(tmp_path, bus_settings()) as h,
        RawSubscriber(h.stub, "keep", ["*"], auto_ack=False, max_attempts=5) as sub,
    ):
        for i in range(4):
            await h.publish(envelope(completed(f"d{i}")))
        got = await sub.take(4)
        sub.ack(got[0].delivery_id)
        sub.ack(got[2].delivery_id)
        sub.nack(got[1].delivery_id, "first failure", delay_s=60)
        await asyncio.sleep(0.2)
    async with (
        BusHarness(tmp_path, bus_settings()) as h,
        RawSubscriber(h.stub, "keep", ["*"], auto_ack=False) as sub,
    ):
        assert sub.acked_sequence == 1
        got = await sub.take(2)
        # 2 was nacked once; 4 was in flight when the stream ended, which counts too.
        assert [(d.event.sequence, d.attempt) for d in got] == [(2, 2), (4, 2)]
        assert await sub.nothing_within(0.2)
