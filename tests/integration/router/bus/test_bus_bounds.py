"""The bus's bounds against a real gRPC server: oversized envelopes are refused whole, a
subscriber cannot ask for a day-long ack timeout or an unbounded window, its unacked bytes are
bounded, ListEvents pages stay within a client's receive limit, and one caller's Subscribe
streams and durable consumers are bounded, each refusal naming its setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from services.kit.rpc.errors import InvalidArgument, ResourceExhausted, from_rpc_error
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import BusHarness, RawSubscriber, bus_settings, completed, envelope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable
    from pathlib import Path

    from soulspot.router.v1 import event_bus_pb2_grpc

KIB = 1024
MIB = 1024 * KIB


async def _violations(call: Awaitable[object]) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = from_rpc_error(info.value)
    assert isinstance(err, InvalidArgument)
    bad = err.detail(error_details_pb2.BadRequest)
    assert bad is not None
    return {v.field: v.description for v in bad.field_violations}


async def _subscribe_refusal(
    stub: event_bus_pb2_grpc.EventBusServiceAsyncStub, start: router_pb2.SubscribeStart
) -> grpc.aio.AioRpcError:
    call = stub.Subscribe(iter([router_pb2.SubscribeRequest(start=start)]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    return info.value


def _quota_failure(err: grpc.aio.AioRpcError) -> str:
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    mesh = from_rpc_error(err)
    assert isinstance(mesh, ResourceExhausted)
    quota = mesh.detail(error_details_pb2.QuotaFailure)
    assert quota is not None
    return str(quota.violations[0].description)


async def test_megabytes_of_attributes_are_refused_and_not_stored(harness: BusHarness) -> None:
    env = envelope(completed())
    env.attributes["blob"] = "x" * (3 * MIB)
    fields = await _violations(harness.publish(env))
    assert "SOULSPOT_BUS__MAX_EVENT_BYTES" in fields["event"]
    assert "SOULSPOT_BUS__MAX_ATTRIBUTE_VALUE_CHARS" in fields["event.attributes['blob']"]
    listed = await harness.stub.ListEvents(router_pb2.ListEventsRequest())
    assert list(listed.events) == []


async def test_too_many_attributes_and_long_strings_are_refused(harness: BusHarness) -> None:
    env = envelope(completed())
    for i in range(harness.settings.max_attributes + 1):
        env.attributes[f"k{i}"] = "v"
    env.subject = "s" * (harness.settings.max_string_field_chars + 1)
    env.causation_chain.add(event_id="e" * 5000, event_type="download.started", source_module="a")
    fields = await _violations(harness.publish(env))
    assert "SOULSPOT_BUS__MAX_ATTRIBUTES" in fields["event.attributes"]
    assert "SOULSPOT_BUS__MAX_STRING_FIELD_CHARS" in fields["event.subject"]
    assert "event.causation_chain[0].event_id" in fields


async def test_oversized_event_in_a_publish_stream_is_refused_alone(harness: BusHarness) -> None:
    big = envelope(completed("big"))
    big.attributes["blob"] = "x" * (2 * MIB)
    small = envelope(completed("small"))

    async def batches() -> AsyncIterator[router_pb2.PublishStreamRequest]:
        yield router_pb2.PublishStreamRequest(batch_id=1, events=[big, small])

    answers = [a async for a in harness.stub.PublishStream(batches())]
    results = answers[0].results
    assert results[0].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "SOULSPOT_BUS__MAX_EVENT_BYTES" in results[0].error_message
    assert results[1].error_code == 0
    assert results[1].sequence > 0


async def test_day_long_ack_timeout_is_refused_naming_the_setting(harness: BusHarness) -> None:
    start = router_pb2.SubscribeStart(consumer="slow", event_types=["download.*"])
    start.ack_timeout.FromSeconds(86400)
    err = await _subscribe_refusal(harness.stub, start)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SOULSPOT_BUS__MAX_ACK_TIMEOUT_S" in (err.details() or "")


async def test_window_above_the_cap_is_refused_naming_the_setting(harness: BusHarness) -> None:
    start = router_pb2.SubscribeStart(
        consumer="wide", event_types=["download.*"], max_in_flight=4096
    )
    err = await _subscribe_refusal(harness.stub, start)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SOULSPOT_BUS__MAX_IN_FLIGHT_CAP" in (err.details() or "")


async def test_unacked_bytes_stop_deliveries_until_acks_come_back(tmp_path: Path) -> None:
    settings = bus_settings(max_in_flight_bytes=64 * KIB)
    async with BusHarness(tmp_path, settings) as harness:
        for i in range(10):
            payload = completed(f"d{i}")
            payload.source = "s" * (20 * KIB)
            await harness.publish(envelope(payload))
        async with RawSubscriber(
            harness.stub, "holder", ["download.completed"], max_in_flight=100, auto_ack=False
        ) as sub:
            first = await sub.take(4)
            # 4 x 20 KiB reach the 64 KiB bound: nothing more while they are unacked.
            assert await sub.nothing_within(0.5)
            sub.ack_batch([d.delivery_id for d in first])
            more = await sub.take(4)
            assert {d.event.sequence for d in more}.isdisjoint({d.event.sequence for d in first})


async def test_list_events_pages_are_bounded_in_bytes(tmp_path: Path) -> None:
    async with BusHarness(tmp_path, bus_settings(max_list_bytes=64 * KIB)) as harness:
        for i in range(10):
            payload = completed(f"d{i}")
            payload.source = "s" * (20 * KIB)
            await harness.publish(envelope(payload))
        seen: list[int] = []
        token = ""
        pages = 0
        while True:
            page = await harness.stub.ListEvents(
                router_pb2.ListEventsRequest(limit=1000, oldest_first=True, page_token=token)
            )
            assert page.ByteSize() <= 64 * KIB + 4 * KIB
            seen.extend(e.sequence for e in page.events)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert seen == list(range(1, 11))
        assert pages >= 4


async def test_subscribe_streams_per_caller_are_bounded(tmp_path: Path) -> None:
    settings = bus_settings(max_subscribe_streams_per_identity=3)
    async with BusHarness(tmp_path, settings) as harness:
        subs = [RawSubscriber(harness.stub, "shared", ["download.*"]) for _ in range(3)]
        for sub in subs:
            await sub.__aenter__()
        try:
            start = router_pb2.SubscribeStart(consumer="shared", event_types=["download.*"])
            described = _quota_failure(await _subscribe_refusal(harness.stub, start))
            assert "SOULSPOT_BUS__MAX_SUBSCRIBE_STREAMS_PER_IDENTITY=3" in described
        finally:
            await subs[0].close()
        # A closed stream gives its place back.
        async with RawSubscriber(harness.stub, "shared", ["download.*"]):
            pass
        for sub in subs[1:]:
            await sub.close()


async def test_durable_consumers_per_caller_are_bounded(tmp_path: Path) -> None:
    async with BusHarness(tmp_path, bus_settings(max_consumers_per_identity=2)) as harness:
        for name in ("one", "two"):
            async with RawSubscriber(harness.stub, name, ["download.*"]):
                pass
        start = router_pb2.SubscribeStart(consumer="three", event_types=["download.*"])
        described = _quota_failure(await _subscribe_refusal(harness.stub, start))
        assert "SOULSPOT_BUS__MAX_CONSUMERS_PER_IDENTITY=2" in described
        # The consumers it already has stay usable.
        async with RawSubscriber(harness.stub, "one", ["download.*"]):
            pass
        assert "three" not in harness.bus.consumers
