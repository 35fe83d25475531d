"""Publishes with a header block built once (acks.py): the server receives what nats-py's
own publish with the same headers sends, and a closed connection refuses alike."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import nats
import pytest
from nats import errors as nats_errors

from router.bus.jetstream.acks import (
    header_block,
    header_value,
    publish_encoded,
    publish_many_encoded,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from tests.helpers.nats_server import NatsServerProcess


async def test_an_encoded_publish_arrives_as_nats_py_would_send_the_same_headers(
    nats_server: NatsServerProcess,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        got: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            got.put_nowait(msg)

        await nc.subscribe("t.>", cb=collect)
        # An id with surrounding space and line breaks: nats-py strips it and turns the
        # breaks into spaces, so it cannot end the header (or add one).
        raw_id = " id\r\nNats-Expected-Stream: other \n"
        headers = {"Nats-Msg-Id": raw_id, "Soulspot-Parked": "1"}
        await nc.publish("t.own", b"data", headers=headers)
        block = header_block({k: header_value(v) for k, v in headers.items()})
        await publish_encoded(nc, "t.encoded", b"data", block, reply="t.reply")
        await nc.flush()
        own = await asyncio.wait_for(got.get(), 10)
        encoded = await asyncio.wait_for(got.get(), 10)
        assert encoded.headers == own.headers
        assert encoded.headers is not None
        assert encoded.headers["Nats-Msg-Id"] == "id  Nats-Expected-Stream: other"
        assert "Nats-Expected-Stream" not in encoded.headers
        assert (encoded.data, encoded.reply) == (b"data", "t.reply")
    finally:
        await nc.close()
    with pytest.raises(nats_errors.ConnectionClosedError):
        await publish_encoded(nc, "t.late", b"data", header_block({"A": "b"}))


async def test_many_encoded_publishes_arrive_in_order_and_a_refused_one_sends_none(
    nats_server: NatsServerProcess,
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        got: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            got.put_nowait(msg)

        await nc.subscribe("m.>", cb=collect)
        sent = [(f"m.{i}", f"data{i}".encode(), header_block({"N": str(i)})) for i in range(5)]
        await publish_many_encoded(nc, sent)
        too_large = b"x" * (nc.max_payload + 1)
        with pytest.raises(nats_errors.MaxPayloadError):
            await publish_many_encoded(
                nc,
                [("m.refused", b"a", b"NATS/1.0\r\n\r\n")] * 2
                + [("m.refused", too_large, b"NATS/1.0\r\n\r\n")],
            )
        await publish_encoded(nc, "m.last", b"last", header_block({"N": "last"}))
        await nc.flush()
        arrived = [await asyncio.wait_for(got.get(), 10) for _ in range(6)]
        assert [(m.subject, m.data) for m in arrived] == [
            *((s, d) for s, d, _ in sent),
            ("m.last", b"last"),
        ]
        assert [m.headers for m in arrived][:2] == [{"N": "0"}, {"N": "1"}]
        assert nc.stats["out_msgs"] == 6
    finally:
        await nc.close()
    await publish_many_encoded(nc, [])  # nothing to send: no error on a closed connection
    with pytest.raises(nats_errors.ConnectionClosedError):
        await publish_many_encoded(nc, sent)
