"""Ordering keys: per durable consumer, one delivery in flight per key, in sequence order,
whichever of the competing subscriptions has room."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from soulspot.router.v1 import router_pb2
from tests.helpers.bus import (
    BusHarness,
    RawSubscriber,
    completed,
    envelope,
    wait_for,
)

if TYPE_CHECKING:
    from soulspot.events.v1 import envelope_pb2

QUIET_S = 0.3  # long enough for the dispatcher to have delivered anything it would


def keyed(name: str, key: str) -> envelope_pb2.EventEnvelope:
    env = envelope(completed(name))
    env.ordering_key = key
    return env


def delivered(*subs: RawSubscriber) -> list[router_pb2.Delivery]:
    return sorted((d for s in subs for d in s.received), key=lambda d: d.delivery_id)


def ids_of(deliveries: list[router_pb2.Delivery]) -> list[str]:
    return [d.event.event_id for d in deliveries]


async def wait_delivered(count: int, *subs: RawSubscriber) -> list[router_pb2.Delivery]:
    await wait_for(lambda: len(delivered(*subs)) >= count)
    return delivered(*subs)


def owner_of(delivery: router_pb2.Delivery, *subs: RawSubscriber) -> RawSubscriber:
    return next(s for s in subs if delivery in s.received)


async def test_a_key_waits_for_its_ack_while_other_keys_and_unkeyed_events_flow(
    harness: BusHarness,
) -> None:
    async with (
        RawSubscriber(harness.stub, "queue", ["*"], max_in_flight=2, auto_ack=False) as a,
        RawSubscriber(harness.stub, "queue", ["*"], max_in_flight=2, auto_ack=False) as b,
    ):
        a1, a2, b1, c = keyed("a1", "A"), keyed("a2", "A"), keyed("b1", "B"), keyed("c", "")
        for env in (a1, a2, b1, c):
            await harness.publish(env)
        # Room for all four, yet A2 must wait for A1.
        got = await wait_delivered(3, a, b)
        await asyncio.sleep(QUIET_S)
        got = delivered(a, b)
        assert sorted(ids_of(got)) == sorted([a1.event_id, b1.event_id, c.event_id])
        assert harness.bus.consumers["queue"].held_back == 1
        first = next(d for d in got if d.event.event_id == a1.event_id)
        owner_of(first, a, b).ack(first.delivery_id)
        got = await wait_delivered(4, a, b)
        assert got[-1].event.event_id == a2.event_id
        assert got[-1].attempt == 1
        for d in got[1:]:
            owner_of(d, a, b).ack(d.delivery_id)
        await wait_for(lambda: harness.bus.consumers["queue"].floor == 4)
        assert harness.bus.consumers["queue"].held_back == 0


async def test_a_key_waits_for_the_redelivery_after_a_delayed_nack(harness: BusHarness) -> None:
    async with (
        RawSubscriber(harness.stub, "queue", ["*"], max_in_flight=4, auto_ack=False) as a,
        RawSubscriber(harness.stub, "queue", ["*"], max_in_flight=4, auto_ack=False) as b,
    ):
        a1, a2 = keyed("a1", "A"), keyed("a2", "A")
        await harness.publish(a1)
        await harness.publish(a2)
        (first,) = await wait_delivered(1, a, b)
        assert first.event.event_id == a1.event_id
        owner_of(first, a, b).nack(first.delivery_id, "later", delay_s=0.4)
        # While A1 waits for its redelivery, and while the redelivery is unacked, A2 waits.
        got = await wait_delivered(2, a, b)
        assert [(d.event.event_id, d.attempt) for d in got] == [(a1.event_id, 1), (a1.event_id, 2)]
        await asyncio.sleep(QUIET_S)
        assert len(delivered(a, b)) == 2
        again = got[1]
        owner_of(again, a, b).ack(again.delivery_id)
        got = await wait_delivered(3, a, b)
        assert (got[2].event.event_id, got[2].attempt) == (a2.event_id, 1)
        owner_of(got[2], a, b).ack(got[2].delivery_id)


async def test_a_key_waits_for_the_redelivery_after_an_ack_timeout(harness: BusHarness) -> None:
    async with (
        RawSubscriber(
            harness.stub, "queue", ["*"], max_in_flight=4, auto_ack=False, ack_timeout_s=0.3
        ) as a,
        RawSubscriber(
            harness.stub, "queue", ["*"], max_in_flight=4, auto_ack=False, ack_timeout_s=0.3
        ) as b,
    ):
        a1, a2 = keyed("a1", "A"), keyed("a2", "A")
        await harness.publish(a1)
        await harness.publish(a2)
        got = await wait_delivered(2, a, b)
        assert [(d.event.event_id, d.attempt) for d in got] == [(a1.event_id, 1), (a1.event_id, 2)]
        again = got[1]
        owner_of(again, a, b).ack(again.delivery_id)
        got = await wait_delivered(3, a, b)
        assert (got[2].event.event_id, got[2].attempt) == (a2.event_id, 1)
        owner_of(got[2], a, b).ack(got[2].delivery_id)


async def test_a_dead_lettered_event_releases_its_key(harness: BusHarness) -> None:
    async with (
        RawSubscriber(
            harness.stub, "queue", ["*"], max_in_flight=4, auto_ack=False, max_attempts=3
        ) as a,
        RawSubscriber(
            harness.stub, "queue", ["*"], max_in_flight=4, auto_ack=False, max_attempts=3
        ) as b,
    ):
        a1, a2 = keyed("a1", "A"), keyed("a2", "A")
        await harness.publish(a1)
        await harness.publish(a2)
        for attempt in (1, 2, 3):
            got = await wait_delivered(attempt, a, b)
            assert (got[-1].event.event_id, got[-1].attempt) == (a1.event_id, attempt)
            owner_of(got[-1], a, b).nack(got[-1].delivery_id, f"boom {attempt}")
        got = await wait_delivered(4, a, b)
        assert (got[3].event.event_id, got[3].attempt) == (a2.event_id, 1)
        owner_of(got[3], a, b).ack(got[3].delivery_id)
        letters = (
            await harness.stub.ListDeadLetters(router_pb2.ListDeadLettersRequest(consumer="queue"))
        ).dead_letters
        assert [(dl.event.event_id, dl.attempts) for dl in letters] == [(a1.event_id, 3)]
        await wait_for(lambda: harness.bus.consumers["queue"].floor == 2)


async def test_a_replayed_dead_letter_waits_for_its_key(harness: BusHarness) -> None:
    async with RawSubscriber(
        harness.stub, "queue", ["*"], max_in_flight=4, auto_ack=False, max_attempts=1
    ) as sub:
        a1, a2 = keyed("a1", "A"), keyed("a2", "A")
        await harness.publish(a1)
        await harness.publish(a2)
        first = await sub.next()
        sub.nack(first.delivery_id, "boom")  # the last attempt: parked, A2 goes
        second = await sub.next()
        assert second.event.event_id == a2.event_id
        replayed = await harness.stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(consumer="queue")
        )
        assert replayed.replayed == 1
        await wait_for(lambda: harness.bus.consumers["queue"].held_back == 1)
        assert await sub.nothing_within(QUIET_S)
        sub.ack(second.delivery_id)
        again = await sub.next()
        assert (again.event.event_id, again.attempt) == (a1.event_id, 1)
        sub.ack(again.delivery_id)
        await wait_for(lambda: harness.bus.consumers["queue"].held_back == 0)


async def test_many_keys_keep_their_order_across_competing_subscribers(
    harness: BusHarness,
) -> None:
    subs = [
        RawSubscriber(harness.stub, "queue", ["*"], max_in_flight=3, auto_ack=False)
        for _ in range(3)
    ]
    async with subs[0], subs[1], subs[2]:
        keys = ["K0", "K1", "K2", ""]
        sent = [keyed(f"e{i}", keys[i % 4]) for i in range(40)]
        for env in sent:
            await harness.publish(env)
        acked: list[str] = []
        in_flight: dict[str, int] = {}  # key -> deliveries of it not yet acked
        seen = 0
        async with asyncio.timeout(10):
            while len(acked) < len(sent):
                got = delivered(*subs)
                for d in got[seen:]:
                    key = d.event.ordering_key
                    if key:
                        in_flight[key] = in_flight.get(key, 0) + 1
                        assert in_flight[key] == 1, f"two deliveries of key {key} in flight"
                seen = len(got)
                # Ack the oldest unacked delivery (the others stay in flight meanwhile).
                pending = [d for d in got if d.event.event_id not in acked]
                if not pending:
                    await asyncio.sleep(0.01)
                    continue
                d = pending[0]
                if d.event.ordering_key:
                    in_flight[d.event.ordering_key] -= 1
                acked.append(d.event.event_id)
                owner_of(d, *subs).ack(d.delivery_id)
                await asyncio.sleep(0.005)
        for key in keys[:3]:
            order = [i for i in acked if i in {e.event_id for e in sent if e.ordering_key == key}]
            assert order == [e.event_id for e in sent if e.ordering_key == key]
