"""A KV listing on a real nats-server rides out a server that stops answering for a moment (as
a JetStream cluster does while a stream's leader moves): it starts over with a new consumer
under the mesh's backoff and lists every key; it gives up at its deadline, and an error that
cannot pass (a bucket that is not there) reaches the caller at once, without a retry."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

import nats
import nats.js.errors as js_errors
import pytest
from nats.js.api import KeyValueConfig

from router.bus.jetstream import kv_listing
from router.bus.jetstream.kv_listing import list_kv
from services.kit.support import backoff

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nats.aio.client import Client

    from tests.helpers.nats_server import NatsServerProcess

BUCKET = "listing_retry"
KEYS = {f"k{i}": f"v{i}".encode() for i in range(5)}
# Requests of the listing time out this soon, so a stopped server fails a try quickly.
REQUEST_TIMEOUT_S = 0.5
# How long the server stays stopped once a try failed: the next tries fail too.
STILL_STOPPED_S = 1.0


@pytest.fixture
async def client(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket=BUCKET, history=1))
        for key, value in KEYS.items():
            await kv.put(key, value)
        yield nc
    finally:
        await nc.close()


class Waits(list[float]):
    """The backoff waits a listing took (still slept, through the real sleep)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = asyncio.Event()

    async def sleep(self, delay: float) -> None:
        self.append(delay)
        self.first.set()
        await asyncio.sleep(delay)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    taken = Waits()
    monkeypatch.setattr(backoff, "sleep", taken.sleep)
    return taken


@contextlib.contextmanager
def stopped(server: NatsServerProcess) -> Iterator[None]:
    """The server frozen (SIGSTOP) until the block ends, then thawed (SIGCONT)."""
    server.popen.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.popen.send_signal(signal.SIGCONT)


async def test_a_listing_started_while_the_server_is_stopped_lists_every_key_once_it_answers(
    client: Client, nats_server: NatsServerProcess, waits: Waits
) -> None:
    js = client.jetstream(timeout=REQUEST_TIMEOUT_S)
    with stopped(nats_server):
        listing = asyncio.ensure_future(list_kv(js, BUCKET, ">", deadline_s=30.0))
        # Thawed only once a try has failed and the listing waits to try again.
        async with asyncio.timeout(10):
            await waits.first.wait()
        await asyncio.sleep(STILL_STOPPED_S)
    async with asyncio.timeout(30):
        assert await listing == KEYS
    assert waits, "the listing never met the stopped server"


async def test_a_listing_gives_up_at_its_deadline_while_the_server_stays_stopped(
    client: Client, nats_server: NatsServerProcess, waits: Waits
) -> None:
    js = client.jetstream(timeout=REQUEST_TIMEOUT_S)
    with stopped(nats_server), pytest.raises(TimeoutError):
        await list_kv(js, BUCKET, ">", deadline_s=2.0)
    assert waits, "the listing gave up without trying again"
    # Thawed, the next listing (the caller's next round) lists every key.
    assert await list_kv(js, BUCKET, ">") == KEYS


async def test_a_listing_of_a_bucket_that_is_not_there_fails_at_once(
    client: Client, waits: Waits
) -> None:
    with pytest.raises(js_errors.NotFoundError):
        await list_kv(client.jetstream(), "no_such_bucket", ">")
    assert waits == []


def test_only_errors_that_may_pass_are_tried_again() -> None:
    transient = [
        js_errors.ServiceUnavailableError(),
        js_errors.ServerError(code=500),
        nats.errors.NoRespondersError(),
        nats.errors.TimeoutError(),
        TimeoutError(),
        js_errors.NotFoundError(code=404, err_code=kv_listing.CONSUMER_NOT_FOUND),
        js_errors.APIError(code=503),
    ]
    lasting = [
        js_errors.NotFoundError(code=404, err_code=10059),  # stream not found
        js_errors.BadRequestError(code=400),
        js_errors.APIError(code=409),
        ValueError("bad value"),
    ]
    assert [e for e in transient if not kv_listing.is_transient(e)] == []
    assert [e for e in lasting if kv_listing.is_transient(e)] == []
