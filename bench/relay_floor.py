"""The JetStream relay floor: the least a router with its log on JetStream does per event.

Run by bench/bus_bench.py as a process of its own, on the bus's event loop:
`python -m bench.relay_floor <port file> <nats url>`.

A grpc.aio server with two methods, the bytes of the bus's messages and nothing more:

- Publish (stream of PublishStreamRequest bytes, one empty answer each, in order): every
  event becomes one JetStream publish on `RELAY_BENCH.<event_type>` with `Nats-Msg-Id` set
  (a router must publish idempotently), grouped as the bus's store groups them: the
  requests that arrive while a group is on its way go together once it is answered, as one
  JetStream atomic batch from 64 events on (one ack for the lot), fewer as separate
  publishes sent back to back (see ATOMIC_BATCH_MIN in router/bus/jetstream_store.py). Each
  request is answered once JetStream acked its events.
- Subscribe (first request: the consumer's name; then one empty request per delivery
  message, the subscriber's AckBatch): one durable JetStream pull consumer per subscriber
  (AckPolicy.ALL, max_ack_pending 1,000 as the bus's subscribers ask), pulled as the bus
  pulls (one request out at a time, for the room left), each run of messages that arrives in
  one loop turn streamed as one message (the events as a PublishStreamRequest's repeated
  field, up to 256), and JetStream acked on each AckBatch (one ack for the batch).

What it leaves out, and the bus does: validation and stamping, the event-ids bucket, the
dispatcher, ordering keys, attempts and dead letters, consumer leases and records, metrics.
So no router on grpc.aio in Python that keeps its log on JetStream and delivers through
itself does better than this; the bench measures it beside the bus.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.bus.jetstream.acks import AckedPublisher, header_value, publish_encoded
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

RELAY_SERVICE = "soulspot.bench.v1.Relay"
STREAM = "RELAY_BENCH"
ATOMIC_BATCH_MAX = 500  # the bus store's batch bounds
ATOMIC_BATCH_MIN = 64
MAX_IN_FLIGHT = 1000  # what the bench's subscribers ask of the bus
MAX_BATCH = 256  # the bench's subscribers' max_batch
PULL_WAIT_S = 5.0
ACK_WAIT_S = 10.0
_ACK = b"+ACK"

_Event = tuple[str, bytes, str]  # subject, data, event_id


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def delivery_message(datas: list[bytes]) -> bytes:
    """The events as a PublishStreamRequest's `events` (field 2), written by hand: the
    stored bytes go out as they are, nothing parsed or built per event."""
    return b"".join(b"\x12" + _varint(len(d)) + d for d in datas)


class GroupCommit:
    """Appends that arrive while a group is on its way go together once it is answered."""

    def __init__(self, nc: Client, publisher: AckedPublisher) -> None:
        self._nc = nc
        self._publisher = publisher
        self._queued: list[tuple[list[_Event], asyncio.Future[None]]] = []
        self._busy = False
        self._due = False
        self._tasks: set[asyncio.Task[None]] = set()

    def append(self, events: list[_Event]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((events, future))
        self._kick()
        return future

    def _kick(self) -> None:
        if self._queued and not self._busy and not self._due:
            self._due = True
            asyncio.get_running_loop().call_soon(self._go)

    def _go(self) -> None:
        self._due = False
        queued, self._queued = self._queued, []
        self._busy = True
        task = asyncio.ensure_future(self._commit(queued))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._busy = False
        self._kick()

    async def _commit(self, queued: list[tuple[list[_Event], asyncio.Future[None]]]) -> None:
        events = [e for item, _ in queued for e in item]
        chunks = [events[i : i + ATOMIC_BATCH_MAX] for i in range(0, len(events), ATOMIC_BATCH_MAX)]
        try:
            await asyncio.gather(*(self._send(chunk) for chunk in chunks))
        except Exception as err:
            for _, future in queued:
                if not future.done():
                    future.set_exception(err)
            return
        for _, future in queued:
            if not future.done():
                future.set_result(None)

    async def _send(self, chunk: list[_Event]) -> None:
        """One publish, or one atomic batch; the headers written as the store writes them."""
        if len(chunk) < ATOMIC_BATCH_MIN:
            acks = []
            for subject, data, event_id in chunk:
                header = f"NATS/1.0\r\nNats-Msg-Id: {header_value(event_id)}\r\n\r\n".encode()
                acks.append(await self._publisher.send(subject, data, header))
            await asyncio.gather(*acks)
            return
        batch_id = uuid.uuid4().hex
        last = len(chunk)
        for number, (subject, data, event_id) in enumerate(chunk, 1):
            commit = "Nats-Batch-Commit: 1\r\n" if number == last else ""
            header = (
                f"NATS/1.0\r\nNats-Msg-Id: {header_value(event_id)}\r\n"
                f"Nats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: {number}\r\n{commit}\r\n"
            ).encode()
            if number < last:
                await publish_encoded(self._nc, subject, data, header)
            else:
                await (await self._publisher.send(subject, data, header))


class PullRelay:
    """One subscriber's durable pull consumer, streamed to it, acked on its AckBatches."""

    def __init__(self, nc: Client, js: JetStreamContext, name: str) -> None:
        self._nc = nc
        self._js = js
        self.name = name
        self.out: asyncio.Queue[bytes] = asyncio.Queue()
        self._pending: list[Msg] = []
        self._flush_due = False
        self._sent: collections.deque[tuple[str, int]] = collections.deque()  # last reply, n
        self._in_flight = 0
        self._asked = 0
        self._got = 0
        self._ended = asyncio.Event()
        self._room = asyncio.Event()
        self._inbox = ""
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        await self._js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=self.name,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.ALL,
                max_ack_pending=MAX_IN_FLIGHT,
                filter_subject=f"{STREAM}.download.completed",
            ),
        )
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        self._task = asyncio.create_task(self._pull())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            await self._sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self._js.delete_consumer(STREAM, self.name)

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and headers.get("Status"):
            if headers["Status"] != "100":
                self._ended.set()
            return
        self._got += 1
        if self._got >= self._asked:
            self._ended.set()
        self._pending.append(msg)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """What arrived in this loop turn goes to the subscriber, MAX_BATCH at a time."""
        self._flush_due = False
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MAX_BATCH):
            batch = pending[i : i + MAX_BATCH]
            self._sent.append((batch[-1].reply, len(batch)))
            self._in_flight += len(batch)
            self.out.put_nowait(delivery_message([m.data for m in batch]))

    async def acked(self) -> None:
        """The subscriber's AckBatch for the oldest unacked delivery: JetStream acked up to
        its last message (AckPolicy.ALL)."""
        reply, count = self._sent.popleft()
        await self._nc.publish(reply, _ACK)
        self._in_flight -= count
        self._room.set()

    async def _pull(self) -> None:
        expires = int(PULL_WAIT_S * 1_000_000_000)
        nxt = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{self.name}"
        while True:
            wanted = MAX_IN_FLIGHT - self._in_flight - len(self._pending)
            if wanted <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            self._asked, self._got = wanted, 0
            self._ended.clear()
            request = json.dumps({"batch": wanted, "expires": expires}).encode()
            await self._nc.publish(nxt, request, reply=self._inbox)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PULL_WAIT_S + 1.0):
                    await self._ended.wait()


async def serve(port_file: Path, nats_url: str) -> None:
    """Serve the relay until terminated; the port goes to `port_file` once it listens."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    from bench.floor_server import start_floor_server

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=STREAM, subjects=[f"{STREAM}.>"], storage=StorageType.FILE, allow_atomic=True
        )
    )
    publisher = AckedPublisher(nc, wait_s=ACK_WAIT_S)
    await publisher.start()
    commit = GroupCommit(nc, publisher)

    async def publish(requests: AsyncIterator[bytes], _context: Any) -> Any:
        answers: asyncio.Queue[asyncio.Future[None] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for raw in requests:
                    request = router_pb2.PublishStreamRequest.FromString(raw)
                    answers.put_nowait(
                        commit.append(
                            [
                                (f"{STREAM}.{e.event_type}", e.SerializeToString(), e.event_id)
                                for e in request.events
                            ]
                        )
                    )
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                await answer
                yield b""
        finally:
            reader.cancel()

    async def subscribe(requests: AsyncIterator[bytes], _context: Any) -> Any:
        iterator = requests.__aiter__()
        name = (await iterator.__anext__()).decode()
        relay = PullRelay(nc, js, name)
        await relay.open()

        async def acks() -> None:
            async for _ack in iterator:
                await relay.acked()

        reader = asyncio.create_task(acks())
        try:
            yield b""  # subscribed
            while True:
                yield await relay.out.get()
        finally:
            reader.cancel()
            await relay.close()

    server = await start_floor_server(RELAY_SERVICE, publish, subscribe, port_file)
    try:
        await server.wait_for_termination()
    finally:
        await publisher.stop()
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from services.kit.support import eventloop

    eventloop.run(serve(Path(args[0]), args[1]))


if __name__ == "__main__":
    main()
