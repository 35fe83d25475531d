"""Consumer leases do not count time a router could not reach NATS as another router's lease
standing still: after an outage longer than a lease, a live holder keeps its consumer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from router.bus.jetstream import consumer_lease
from router.bus.jetstream.consumer_lease import ConsumerLeases

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.js.kv import KeyValue

    from tests.helpers.nats_server import NatsServerProcess

LEASE_S = 1.0


class Clock:
    """The leases' monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Reach:
    """A router's view of the lease bucket: the real one, or NATS out of reach."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._kv, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise NatsTimeoutError
            return await attr(*args, **kwargs)

        return call


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(consumer_lease, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
async def bucket(nats_server: NatsServerProcess) -> AsyncIterator[KeyValue]:
    nc = await nats.connect(nats_server.url)
    try:
        yield await nc.jetstream().create_key_value(bucket="BLIND_CONSUMER_LEASES")
    finally:
        await nc.close()


async def test_an_outage_longer_than_a_lease_takes_nothing_from_a_live_holder(
    bucket: KeyValue, clock: Clock
) -> None:
    holder_view, claimer_view = Reach(bucket), Reach(bucket)
    holder = ConsumerLeases(holder_view, lease_s=LEASE_S, owner="holder")  # type: ignore[arg-type]
    claimer = ConsumerLeases(claimer_view, lease_s=LEASE_S, owner="claimer")  # type: ignore[arg-type]
    assert await holder.claim("c") is None
    seen = await claimer.claim("c")
    assert seen is not None
    assert seen.owner == "holder"
    # NATS away for everyone, for longer than a lease: the holder cannot renew (nor does
    # it give up: its renewal is not due past a lease yet), the claimer cannot read.
    holder_view.down = claimer_view.down = True
    clock.now += LEASE_S / 2
    with pytest.raises(NatsTimeoutError):
        await claimer.claim("c")
    clock.now += LEASE_S
    holder_view.down = claimer_view.down = False
    # Back: the lease has not moved since the claimer first saw it, a lease and a half
    # ago, but the claimer could not watch it meanwhile: it takes nothing.
    again = await claimer.claim("c")
    assert again is not None
    assert again.owner == "holder"
    # The holder renews at its next tick, and the lease moves on.
    await holder.renew()
    assert holder.holds("c")
    clock.now += LEASE_S / 3
    assert (await claimer.claim("c")) is not None


async def test_a_lease_still_goes_stale_once_the_claimer_watched_it_for_a_whole_lease(
    bucket: KeyValue, clock: Clock
) -> None:
    dead = ConsumerLeases(bucket, lease_s=LEASE_S, owner="dead")
    claimer_view = Reach(bucket)
    claimer = ConsumerLeases(claimer_view, lease_s=LEASE_S, owner="claimer")  # type: ignore[arg-type]
    assert await dead.claim("c") is None
    claimer_view.down = True
    with pytest.raises(NatsTimeoutError):
        await claimer.claim("c")
    claimer_view.down = False
    assert (await claimer.claim("c")) is not None  # back in sight: watching from now
    clock.now += LEASE_S
    assert await claimer.claim("c") is None  # stood still for a whole lease: taken
    assert claimer.holds("c")


async def test_a_slow_renewal_makes_the_router_blind_too(bucket: KeyValue, clock: Clock) -> None:
    holder = ConsumerLeases(bucket, lease_s=LEASE_S, owner="holder")
    slow_view = Reach(bucket)
    claimer = ConsumerLeases(slow_view, lease_s=LEASE_S, owner="claimer")  # type: ignore[arg-type]
    assert await claimer.claim("mine") is None
    assert await holder.claim("c") is None
    assert (await claimer.claim("c")) is not None
    real_update = bucket.update

    async def slow_update(*args: Any, **kwargs: Any) -> int:
        clock.now += LEASE_S  # the answer took a whole lease
        revision: int = await real_update(*args, **kwargs)
        return revision

    slow_view._kv = SimpleNamespace(  # type: ignore[assignment]
        update=slow_update, get=bucket.get, create=bucket.create, delete=bucket.delete
    )
    await claimer.renew()
    assert claimer.holds("mine")
    again = await claimer.claim("c")
    assert again is not None
    assert again.owner == "holder"
