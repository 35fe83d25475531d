"""A pulled JetStream message read cheaply: its delivery numbers from the reply subject, and
its event parsed once per router and shared by every consumer that pulls it."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from router.bus.jetstream.pull_consumer import delivery_of
from router.bus.jetstream.shared_envelopes import SharedEnvelopes
from services.kit.events.client import build_envelope
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2

V1 = "$JS.ACK.SOULSPOT_EVENTS.cYWJj.3.1042.17.1733000000000000000.5"
V2 = "$JS.ACK.hub.ACCHASH.SOULSPOT_EVENTS.cYWJj.3.1042.17.1733000000000000000.5.r4nd0m"


@pytest.mark.parametrize("reply", [V1, V2, V2.rpartition(".")[0]])
def test_the_delivery_numbers_are_nats_pys_own_reading_of_the_reply(reply: str) -> None:
    meta = Msg(None, reply=reply).metadata  # type: ignore[arg-type]
    expected = (meta.sequence.stream, meta.num_delivered, meta.num_pending)
    assert delivery_of(reply) == expected == (1042, 3, 5)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.ACK.S.c.1.2", "$JS.API.A.B.C.D.E.F.G"])
def test_a_reply_that_is_no_jetstream_delivery_is_refused(reply: str) -> None:
    with pytest.raises(ValueError, match="not a JetStream"):
        delivery_of(reply)


def _data(n: int, *, size: int = 0) -> bytes:
    payload = download_pb2.DownloadStarted(
        download_id=f"d{n}" + "x" * size,
        track=references_pb2.TrackReference(title=f"t{n}", artist="a"),
    )
    return build_envelope(payload, source_module="folder").SerializeToString()


def test_consumers_pulling_the_same_event_share_one_parsed_envelope() -> None:
    shared = SharedEnvelopes()
    data = _data(1)
    first = shared.envelope(7, data)
    # Another consumer's copy of the message: equal bytes, another object.
    assert shared.envelope(7, bytes(bytearray(data))) is first
    assert first.sequence == 7
    assert first.SerializeToString() != data  # the sequence is the stream's, set once
    assert shared.parsed == 1


def test_other_bytes_at_a_known_sequence_are_parsed_afresh() -> None:
    # A stream deleted and created again reuses its sequences.
    shared = SharedEnvelopes()
    old = shared.envelope(7, _data(1))
    new = shared.envelope(7, _data(2))
    assert new is not old
    assert new.event_id != old.event_id
    assert len(shared) == 1
    assert shared.parsed == 2


def test_the_oldest_events_go_first_past_the_count() -> None:
    shared = SharedEnvelopes(max_count=3)
    stored = {seq: _data(seq) for seq in range(1, 6)}
    envelopes = {seq: shared.envelope(seq, data) for seq, data in stored.items()}
    assert len(shared) == 3
    assert shared.envelope(5, stored[5]) is envelopes[5]
    assert shared.envelope(1, stored[1]) is not envelopes[1]


def test_the_bytes_held_stay_within_the_bound_and_the_newest_is_always_kept() -> None:
    big = len(_data(0, size=1000))
    shared = SharedEnvelopes(max_bytes=3 * big)
    for seq in range(1, 10):
        shared.envelope(seq, _data(seq, size=1000))
        assert shared.bytes <= 3 * big
    assert len(shared) == 3
    lone, data = SharedEnvelopes(max_bytes=10), _data(1)
    env = lone.envelope(1, data)
    assert len(lone) == 1
    assert lone.envelope(1, data) is env


def test_an_offered_envelope_is_handed_out_without_a_parse_for_its_own_bytes_only() -> None:
    # The store offers each event it appended: the pulls that bring those bytes back share it.
    shared = SharedEnvelopes()
    data = _data(1)
    own = build_envelope(download_pb2.DownloadStarted(download_id="d1"), source_module="x")
    own.ParseFromString(data)
    own.sequence = 7
    shared.offer(7, data, own)
    assert shared.envelope(7, bytes(bytearray(data))) is own
    assert shared.parsed == 0
    assert shared.envelope(7, _data(2)) is not own  # other bytes at that sequence: parsed
    assert shared.parsed == 1
