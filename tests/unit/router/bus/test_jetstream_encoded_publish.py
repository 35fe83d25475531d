"""Publishes with a header block built once (acks.py): the server receives what nats-py's
own publish with the same headers sends, and a closed connection refuses alike."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import nats
import pytest
from nats import errors as nats_errors

from router.bus.jetstream.acks import header_block, header_value, publish_encoded

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
