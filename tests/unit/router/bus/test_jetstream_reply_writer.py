"""Settlements of pulled messages written as one: every payload reaches its reply subject, in
order, as publish would send it; a reply subject that would break the protocol goes through
publish's own checks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import nats
import pytest
from nats.errors import BadSubjectError

from router.bus.jetstream.reply_writer import batched, send_replies

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from tests.helpers.nats_server import NatsServerProcess


@pytest.fixture
async def nc(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


async def test_replies_arrive_in_order_each_with_its_payload(nc: Client) -> None:
    got: list[tuple[str, bytes]] = []
    done = asyncio.Event()
    replies = [(f"replies.m{n % 7}", payload) for n, payload in enumerate([b"+ACK"] * 50)]
    replies += [("replies.nak", b'-NAK {"delay":1000000000}'), ("replies.term", b"+TERM")]

    async def on_msg(msg: Msg) -> None:
        got.append((msg.subject, msg.data))
        if len(got) == len(replies):
            done.set()

    await nc.subscribe("replies.>", cb=on_msg)
    await nc.flush()
    # The pinned nats-py has what the one-write path needs: that is the path tested here.
    assert batched(nc)
    await send_replies(nc, replies)
    async with asyncio.timeout(10):
        await done.wait()
    assert got == replies


async def test_a_reply_subject_that_would_break_the_protocol_is_refused_not_written(
    nc: Client,
) -> None:
    got: list[str] = []
    after = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        got.append(msg.subject)
        if msg.subject == "replies.after":
            after.set()

    await nc.subscribe("replies.>", cb=on_msg)
    await nc.flush()
    with pytest.raises(BadSubjectError):
        await send_replies(nc, [("replies.x\r\nPUB replies.y 4", b"+ACK")])
    await send_replies(nc, [("replies.after", b"+ACK")])
    async with asyncio.timeout(10):
        await after.wait()
    # Nothing of the refused one went out, and the connection is whole.
    assert got == ["replies.after"]
    assert nc.is_connected
