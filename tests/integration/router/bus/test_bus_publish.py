from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from services.kit.rpc.errors import InvalidArgument, from_rpc_error
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import completed, envelope, started

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from soulspot.events.v1 import envelope_pb2
    from tests.helpers.bus import BusHarness


async def _refusal(harness: BusHarness, env: envelope_pb2.EventEnvelope) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.publish(env)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = from_rpc_error(info.value)
    assert isinstance(err, InvalidArgument)
    bad = err.detail(error_details_pb2.BadRequest)
    assert bad is not None
    return {v.field: v.description for v in bad.field_violations}


async def _count(harness: BusHarness) -> int:
    answer = await harness.stub.ListEvents(router_pb2.ListEventsRequest(limit=1000))
    return len(answer.events)


async def test_publish_is_stored_once_per_event_id(harness: BusHarness) -> None:
    env = envelope(completed())
    first = await harness.publish(env)
    again = await harness.publish(env)
    assert first.sequence >= 1
    assert not first.duplicate
    assert again.duplicate
    assert again.sequence == first.sequence
    listed = await harness.stub.ListEvents(router_pb2.ListEventsRequest())
    assert [e.event_id for e in listed.events] == [env.event_id]
    assert listed.events[0].sequence == first.sequence
    assert listed.events[0].HasField("stored_at")


async def test_unknown_event_type_is_refused(harness: BusHarness) -> None:
    env = envelope(completed())
    env.event_type = "download.exploded"
    fields = await _refusal(harness, env)
    assert "unknown event type" in fields["event.event_type"]
    assert await _count(harness) == 0


async def test_wrong_payload_type_is_refused(harness: BusHarness) -> None:
    env = envelope(completed())
    env.payload.Pack(started())
    fields = await _refusal(harness, env)
    assert "DownloadCompleted" in fields["event.payload.type_url"]


async def test_missing_required_fields_are_named_by_path(harness: BusHarness) -> None:
    payload = completed()
    payload.track.title = ""
    env = envelope(payload)
    env.source_module = ""
    fields = await _refusal(harness, env)
    assert set(fields) == {"event.payload.track.title", "event.source_module"}
    assert await _count(harness) == 0


async def test_garbage_payload_bytes_are_refused(harness: BusHarness) -> None:
    env = envelope(completed())
    env.payload.value = b"\xff\xff\xff\xff\xff"
    fields = await _refusal(harness, env)
    assert "do not parse" in fields["event.payload.value"]


async def test_a_major_version_without_a_schema_is_refused(harness: BusHarness) -> None:
    env = envelope(completed())
    env.schema_version = "2.0.0"
    fields = await _refusal(harness, env)
    assert "no major version 2" in fields["event.schema_version"]


async def test_ten_megabyte_payload_is_refused_and_the_bus_keeps_serving(
    harness: BusHarness,
) -> None:
    payload = completed()
    payload.source = "x" * (10 * 1024 * 1024)
    fields = await _refusal(harness, envelope(payload))
    assert "the limit is" in fields["event.payload.value"]
    ok = await harness.publish(envelope(completed()))
    assert ok.sequence == 1


async def test_publish_stream_answers_each_event(harness: BusHarness) -> None:
    good = envelope(completed("a"))
    bad = envelope(download_pb2.DownloadCompleted(download_id="b"))

    async def batches() -> AsyncIterator[router_pb2.PublishStreamRequest]:
        yield router_pb2.PublishStreamRequest(batch_id=7, events=[good, bad, good])

    answers = [a async for a in harness.stub.PublishStream(batches())]
    assert len(answers) == 1
    results = answers[0].results
    assert answers[0].batch_id == 7
    assert results[0].sequence == 1
    assert not results[0].duplicate
    assert results[1].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "events[1].payload.track" in results[1].error_message
    assert results[2].duplicate
    assert results[2].sequence == 1


async def test_list_events_filters_by_type_and_pages(harness: BusHarness) -> None:
    for i in range(5):
        await harness.publish(envelope(completed(f"c{i}")))
        await harness.publish(envelope(started(f"s{i}")))
    page = await harness.stub.ListEvents(
        router_pb2.ListEventsRequest(event_types=["download.completed"], limit=3)
    )
    assert [e.event_type for e in page.events] == ["download.completed"] * 3
    seqs = [e.sequence for e in page.events]
    assert seqs == sorted(seqs, reverse=True)
    assert page.next_page_token
    rest = await harness.stub.ListEvents(
        router_pb2.ListEventsRequest(
            event_types=["download.completed"], limit=3, page_token=page.next_page_token
        )
    )
    assert len(rest.events) == 2
    assert max(e.sequence for e in rest.events) < min(seqs)
    everything = await harness.stub.ListEvents(
        router_pb2.ListEventsRequest(event_types=["download.*"], limit=100)
    )
    assert len(everything.events) == 10


async def test_replay_from_sequence_and_time(harness: BusHarness) -> None:
    for i in range(4):
        await harness.publish(envelope(completed(f"c{i}")))
    replayed = [
        r.event.sequence
        async for r in harness.stub.ReplayEvents(router_pb2.ReplayEventsRequest(from_sequence=2))
    ]
    assert replayed == [2, 3, 4]
    listed = await harness.stub.ListEvents(router_pb2.ListEventsRequest(oldest_first=True))
    when = listed.events[2].stored_at
    by_time = [
        r.event.sequence
        async for r in harness.stub.ReplayEvents(router_pb2.ReplayEventsRequest(from_time=when))
    ]
    assert by_time == [3, 4]


async def test_publish_local_wraps_a_payload_with_causation(harness: BusHarness) -> None:
    cause = envelope(completed("root"))
    await harness.publish(cause)
    answer = await harness.bus.publish_local(started("next"), subject="next", causation=cause)
    assert not answer.duplicate
    (stored,) = (
        await harness.stub.ListEvents(
            router_pb2.ListEventsRequest(event_types=["download.started"])
        )
    ).events
    assert stored.source_module == "router"
    assert stored.causation_id == cause.event_id
    assert stored.correlation_id == cause.correlation_id
    assert [h.event_id for h in stored.causation_chain] == [cause.event_id]
    with pytest.raises(InvalidArgument):
        await harness.bus.publish_local(download_pb2.DownloadCompleted(download_id="x"))


async def test_router_service_bus_rpcs_reach_the_same_bus(harness: BusHarness) -> None:
    # The deprecated RouterService, as `python -m router.bus` serves it beside EventBusService.
    env = envelope(completed())
    answer = await harness.router_stub.Publish(router_pb2.PublishRequest(event=env), timeout=5)
    listed = await harness.stub.ListEvents(router_pb2.ListEventsRequest(), timeout=5)
    assert [e.sequence for e in listed.events] == [answer.sequence]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.router_stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
