"""The event bus under mutual TLS: the router stamps each event's source from the caller's
identity and refuses event types the caller may not publish; durable consumers belong to the
identity that created them; the log-wide reads, replays and consumer deletion are for admins."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING

import grpc
import pytest

from router.bus.sqlite_store import SqliteEventStore
from services.kit.security.identity import CLI, ROUTER
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import track_pb2
from soulspot.router.v1 import event_bus_pb2, router_pb2
from tests.helpers.bus import RawSubscriber, completed, envelope, track, wait_for
from tests.helpers.secure_mesh import CATALOG, LIBRARY, NOTIFICATIONS, SOULSEEK

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable
    from pathlib import Path

    from services.kit.security.identity import Identity
    from tests.helpers.secure_mesh import SecureMesh


def imported() -> track_pb2.TrackImported:
    return track_pb2.TrackImported(
        track=track(), file=references_pb2.FileReference(path="/music/song.flac")
    )


async def _stored(mesh: SecureMesh, event_type: str) -> list[str]:
    """The source_module of every stored event of the type, read as the CLI (an admin)."""
    reply = await mesh.bus_stub(CLI).ListEvents(
        router_pb2.ListEventsRequest(event_types=[event_type], oldest_first=True), timeout=5
    )
    return [e.source_module for e in reply.events]


async def test_an_event_type_the_caller_does_not_produce_is_refused(mesh: SecureMesh) -> None:
    forged = envelope(imported(), source="library")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.bus_stub(CATALOG).Publish(router_pb2.PublishRequest(event=forged), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "track.imported" in (caught.value.details() or "")
    assert CATALOG.uri in (caught.value.details() or "")
    assert await _stored(mesh, "track.imported") == []


async def test_the_source_module_is_the_callers_identity_whatever_it_wrote(
    mesh: SecureMesh,
) -> None:
    claimed = envelope(completed(), source="folder")
    await mesh.bus_stub(SOULSEEK).Publish(router_pb2.PublishRequest(event=claimed), timeout=5)
    assert await _stored(mesh, "download.completed") == ["soulseek"]


async def test_publish_stream_refuses_per_event(mesh: SecureMesh) -> None:
    batch = router_pb2.PublishStreamRequest(
        batch_id=1,
        events=[envelope(completed(), source="folder"), envelope(imported(), source="library")],
    )

    async def send() -> AsyncIterator[router_pb2.PublishStreamRequest]:
        yield batch

    answers = [a async for a in mesh.bus_stub(SOULSEEK).PublishStream(send(), timeout=5)]
    allowed, refused = answers[0].results
    assert allowed.sequence > 0
    assert refused.error_code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "track.imported" in refused.error_message
    assert await _stored(mesh, "download.completed") == ["soulseek"]
    assert await _stored(mesh, "track.imported") == []


async def _subscribe_refusal(
    mesh: SecureMesh,
    identity: Identity,
    consumer: str,
    patterns: list[str],
    inactive_s: float | None = None,
) -> grpc.aio.AioRpcError:
    """The error a Subscribe gets (a subscription that is accepted runs into its deadline)."""
    start = router_pb2.SubscribeStart(
        consumer=consumer, event_types=patterns, start=router_pb2.START_POSITION_EARLIEST
    )
    if inactive_s is not None:
        start.inactive_threshold.FromMilliseconds(int(inactive_s * 1000))

    async def send() -> AsyncIterator[router_pb2.SubscribeRequest]:
        yield router_pb2.SubscribeRequest(start=start)
        await asyncio.sleep(10)

    call = mesh.bus_stub(identity).Subscribe(send(), timeout=2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    return caught.value


async def test_another_identity_cannot_join_or_reshape_a_consumer(mesh: SecureMesh) -> None:
    async with RawSubscriber(mesh.bus_stub(NOTIFICATIONS), "notifications", ["track.imported"]):
        err = await _subscribe_refusal(mesh, CATALOG, "notifications", ["**"])
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert NOTIFICATIONS.uri in (err.details() or "")
        assert mesh.bus.consumers["notifications"].patterns.patterns == ("track.imported",)


async def test_the_routers_pipeline_consumer_cannot_be_joined_to_take_its_deliveries(
    mesh: SecureMesh,
) -> None:
    pipeline = RawSubscriber(mesh.bus_stub(ROUTER), "pipeline", ["download.completed"])
    async with pipeline:
        err = await _subscribe_refusal(mesh, SOULSEEK, "pipeline", ["download.completed"])
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        for n in range(4):
            env = envelope(completed(f"d{n}"))
            await mesh.bus_stub(SOULSEEK).Publish(router_pb2.PublishRequest(event=env), timeout=5)
        delivered = await pipeline.take(4)
        assert sorted(d.event.event_type for d in delivered) == ["download.completed"] * 4


async def test_a_stranger_cannot_shorten_a_consumers_inactive_threshold(mesh: SecureMesh) -> None:
    async with RawSubscriber(mesh.bus_stub(CATALOG), "catalog", ["track.imported"]):
        pass
    # Nobody is subscribed now: the catalog's consumer waits for its module to come back.
    err = await _subscribe_refusal(mesh, NOTIFICATIONS, "catalog", ["track.imported"], 1.0)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    await asyncio.sleep(1.3)
    record = await mesh.bus.store.load_consumer("catalog")
    assert record is not None
    assert record.inactive_s == 0
    assert record.owner == CATALOG.uri


async def test_a_second_subscriber_of_the_owner_must_ask_the_same_terms(
    mesh: SecureMesh,
) -> None:
    async with RawSubscriber(mesh.bus_stub(CATALOG), "catalog", ["track.imported"]):
        err = await _subscribe_refusal(mesh, CATALOG, "catalog", ["track.*"])
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "['track.imported']" in (err.details() or "")
        err = await _subscribe_refusal(mesh, CATALOG, "catalog", ["track.imported"], 1.0)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "inactive_threshold 0s" in (err.details() or "")
        async with RawSubscriber(mesh.bus_stub(CATALOG), "catalog", ["track.imported"]):
            assert len(mesh.bus.consumers["catalog"].subscriptions) == 2


async def test_a_consumer_from_before_owners_goes_to_its_first_subscriber(
    mesh: SecureMesh,
) -> None:
    # As the migration leaves a consumer written by an earlier version: no owner.
    await mesh.bus.store.save_consumer("legacy", ["track.imported"], 0)
    async with RawSubscriber(mesh.bus_stub(LIBRARY), "legacy", ["track.imported"]):
        pass
    err = await _subscribe_refusal(mesh, CATALOG, "legacy", ["track.imported"])
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    record = await mesh.bus.store.load_consumer("legacy")
    assert record is not None
    assert record.owner == LIBRARY.uri


async def test_the_migration_gives_existing_consumers_no_owner(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE consumers (name TEXT PRIMARY KEY, patterns TEXT NOT NULL,"
            " floor INTEGER NOT NULL, inactive_s REAL NOT NULL DEFAULT 0,"
            " idle_since_us INTEGER NOT NULL DEFAULT 0)"
        )
        conn.execute("INSERT INTO consumers (name, patterns, floor) VALUES ('old', 'a.b', 3)")
    conn.close()
    store = SqliteEventStore(path)
    await store.open()
    try:
        record = await store.load_consumer("old")
        assert record is not None
        assert (record.owner, record.floor, record.patterns) == ("", 3, ("a.b",))
    finally:
        await store.close()


async def test_log_wide_reads_replays_and_deletion_are_for_admins(mesh: SecureMesh) -> None:
    stub = mesh.bus_stub(LIBRARY)
    calls: dict[str, Awaitable[object]] = {
        "ListEvents": stub.ListEvents(router_pb2.ListEventsRequest(), timeout=5),
        "ReplayDeadLetters": stub.ReplayDeadLetters(
            router_pb2.ReplayDeadLettersRequest(consumer="library"), timeout=5
        ),
        "DeleteConsumer": stub.DeleteConsumer(
            event_bus_pb2.DeleteConsumerRequest(consumer="catalog"), timeout=5
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert name in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.ReplayEvents(router_pb2.ReplayEventsRequest(), timeout=5):
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_deletes_a_consumer_and_its_subscribers_streams_end(
    mesh: SecureMesh,
) -> None:
    subscriber = RawSubscriber(mesh.bus_stub(CATALOG), "catalog", ["track.imported"])
    async with subscriber:
        reply = await mesh.bus_stub(CLI).DeleteConsumer(
            event_bus_pb2.DeleteConsumerRequest(consumer="catalog"), timeout=5
        )
        assert reply.deleted
        assert "catalog" not in mesh.bus.consumers
        assert await mesh.bus.store.load_consumer("catalog") is None
        await wait_for(lambda: subscriber._task is not None and subscriber._task.done())
