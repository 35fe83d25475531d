"""Post-download pipeline throughput: download.completed in, track.ready out.

All modules run locally as real processes (metadata offline, library, notifications); the
router (capability proxy, event bus on SQLite, pipeline) runs in this process so the
benchmark needs no particular router entry point. Two measurements over fresh audio files:

* through the pipeline: publish download.completed events to the router and wait for their
  track.ready (enrich.metadata, import.track, notify.track_ready via the router's proxy, plus
  the bus round trips and the run store's writes);
* direct baseline: the same three calls made straight to the modules, same concurrency.

The difference is the router's share: what routing, the bus and durable run bookkeeping
cost on top of the modules' own work. Prints a table; run with
`python -m bench.pipeline_bench [--tracks N] [--concurrency C]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from router.app import RouterApp
from router.bus import create_bus
from router.pipeline import Pipeline, load_pipeline_config
from router.pipeline.store import NewStep, SqliteRunStore
from router.settings import RouterSettings
from services.kit.events.client import EventHandlers, RouterPublisher, Subscriber
from services.kit.rpc.channel import open_channel
from services.kit.testing.sample_audio import make_sample_library
from soulspot.capabilities.v1 import (
    library_pb2,
    library_pb2_grpc,
    metadata_pb2,
    metadata_pb2_grpc,
    notify_pb2,
    notify_pb2_grpc,
)
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2 as download_events_pb2
from soulspot.events.v1 import track_pb2 as track_events_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.mesh import Mesh

if TYPE_CHECKING:
    import grpc

    from soulspot.events.v1 import envelope_pb2

MODULES = {
    "metadata": {"SOULSPOT_METADATA__OFFLINE": "true"},
    "library": {},
    "notifications": {"SOULSPOT_NOTIFICATIONS__LOG": "false"},
}
ROUTED = {
    "metadata": "enrich.metadata",
    "library": "import.track",
    "notifications": "notify.track_ready",
}


def _samples(folder: Path, prefix: str, count: int) -> list[tuple[dict[str, Any], Path]]:
    tracks = [
        {
            "artist": f"Bench Artist {n % 7}",
            "album": f"{prefix} Album {n % 5}",
            "title": f"{prefix} Track {n}",
            "track_number": n % 20 + 1,
            "year": 2020,
            "format": "flac",
            "seconds": 0.3,
            "tone_hz": 200.0 + 3.0 * n,
        }
        for n in range(count)
    ]
    return list(zip(tracks, make_sample_library(folder, tracks), strict=True))


def _refs(track: dict[str, Any], path: Path) -> tuple[Any, Any]:
    return (
        references_pb2.TrackReference(title=track["title"], artist=track["artist"]),
        references_pb2.FileReference(path=str(path), size_bytes=path.stat().st_size),
    )


async def through_pipeline(
    channel: grpc.aio.Channel,
    samples: list[tuple[dict[str, Any], Path]],
    *,
    one_at_a_time: bool = False,
) -> tuple[float, list[float]]:
    """(wall seconds for all, per-track latency) from download.completed to track.ready;
    all published at once, or each after the previous one's track.ready."""
    published: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    each_done = asyncio.Event()

    async def on_ready(
        payload: track_events_pb2.TrackReady, envelope: envelope_pb2.EventEnvelope
    ) -> None:
        started = published.pop(payload.download_id, None)
        if started is not None:
            latencies.append(time.perf_counter() - started)
            each_done.set()
            if len(latencies) == len(samples):
                done.set()

    handlers = EventHandlers()
    handlers.add("track.ready", on_ready)
    subscriber = Subscriber(channel, consumer=f"bench-{uuid.uuid4().hex[:8]}", handlers=handlers)
    await subscriber.start()
    await subscriber.wait_connected()
    publisher = RouterPublisher(channel, source_module="folder")
    began = time.perf_counter()
    for track, path in samples:
        ref, file = _refs(track, path)
        download_id = uuid.uuid4().hex
        published[download_id] = time.perf_counter()
        await publisher.publish(
            download_events_pb2.DownloadCompleted(
                download_id=download_id, track=ref, file=file, source="bench", requested_by="bench"
            ),
            subject=download_id,
        )
        if one_at_a_time:
            async with asyncio.timeout(60):
                await each_done.wait()
            each_done.clear()
    async with asyncio.timeout(300):
        await done.wait()
    elapsed = time.perf_counter() - began
    await subscriber.stop()
    return elapsed, latencies


async def direct(
    addresses: dict[str, str], samples: list[tuple[dict[str, Any], Path]], concurrency: int
) -> tuple[float, list[float]]:
    """The same three steps called straight on the modules."""
    channels = {name: open_channel(address) for name, address in addresses.items()}
    metadata = metadata_pb2_grpc.MetadataServiceStub(channels["metadata"])
    library = library_pb2_grpc.LibraryServiceStub(channels["library"])
    notify = notify_pb2_grpc.NotificationServiceStub(channels["notifications"])
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(track: dict[str, Any], path: Path) -> None:
        ref, file = _refs(track, path)
        # Latency counts the wait for a slot too, as a pipeline run's does.
        started = time.perf_counter()
        async with slots:
            enriched = await metadata.EnrichMetadata(
                metadata_pb2.EnrichMetadataRequest(track=ref, file=file), timeout=30
            )
            imported = await library.ImportTrack(
                library_pb2.ImportTrackRequest(track=enriched.track, file=enriched.file),
                timeout=30,
            )
            await notify.NotifyTrackReady(
                notify_pb2.NotifyTrackReadyRequest(track=imported.track, file=imported.file),
                timeout=30,
            )
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    if concurrency == 1:
        for track, path in samples:  # one after another, like the sequential pipeline row
            await one(track, path)
    else:
        await asyncio.gather(*(one(t, p) for t, p in samples))
    elapsed = time.perf_counter() - began
    for channel in channels.values():
        await channel.close()
    return elapsed, latencies


async def breakdown(
    channel: grpc.aio.Channel, notify_address: str, state_dir: Path, samples: int = 30
) -> list[tuple[str, float]]:
    """p50s of the router's parts: one durable publish, one proxy hop (the same cheap call
    through the router and straight to the module), and the run store's bookkeeping."""
    publisher = RouterPublisher(channel, source_module="router")
    ref = references_pb2.TrackReference(title="Breakdown", artist="Bench")
    file = references_pb2.FileReference(path="/nowhere/breakdown.flac")

    async def timed(fn: Any) -> float:
        values = []
        for _ in range(samples):
            started = time.perf_counter()
            await fn()
            values.append(time.perf_counter() - started)
        return statistics.median(values) * 1000

    async def publish() -> None:
        await publisher.publish(
            download_events_pb2.DownloadCompletedForSource(
                download_id=uuid.uuid4().hex, track=ref, file=file
            )
        )

    request = notify_pb2.NotifyTrackReadyRequest(track=ref, file=file)
    via_router = notify_pb2_grpc.NotificationServiceStub(channel)
    async with open_channel(notify_address) as direct_channel:
        straight = notify_pb2_grpc.NotificationServiceStub(direct_channel)

        async def proxied() -> None:
            await via_router.NotifyTrackReady(request, timeout=10)

        async def unproxied() -> None:
            await straight.NotifyTrackReady(request, timeout=10)

        publish_ms = await timed(publish)
        proxied_ms = await timed(proxied)
        direct_ms = await timed(unproxied)

    store = SqliteRunStore(state_dir / "breakdown.sqlite3")
    steps = [NewStep("a", "enrich.metadata", False), NewStep("b", "import.track", True)]
    steps.append(NewStep("c", "notify.track_ready", False))

    async def bookkeeping() -> None:
        # What one three-step run writes and reads.
        run_id, _ = await store.create_run(
            event_id=uuid.uuid4().hex,
            correlation_id="",
            description="",
            trigger=b"",
            context={"steps": {}},
            steps=steps,
        )
        await store.get(run_id)
        for idx in range(3):
            await store.step_started(run_id, idx)
            await store.step_finished(run_id, idx, 3, result={"file": {"path": "/x"}})
        await store.get(run_id)
        await store.set_state(run_id, 2)

    store_ms = await timed(bookkeeping)
    await store.close()
    return [
        ("publish one event (durable, through the router)", publish_ms),
        ("proxy hop: notify via router minus direct", proxied_ms - direct_ms),
        ("run store bookkeeping for one 3-step run", store_ms),
    ]


async def run(tracks: int, concurrency: int) -> None:
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mesh = Mesh(tmp)
        settings = RouterSettings(state_dir=mesh.state_dir)
        settings.router.address = mesh.router_address
        bus = create_bus(settings.bus, state_dir=mesh.state_dir)
        await bus.start()
        config = load_pipeline_config().model_copy(update={"max_concurrent_runs": concurrency})
        pipeline = Pipeline(None, mesh.state_dir, config=config)
        app = RouterApp(settings, bus=bus, pipeline=pipeline)
        await app.start()
        await pipeline.start(app.address)
        try:
            for name, env in MODULES.items():
                mesh.start_module(name, env)
            for name in MODULES:
                await mesh.wait_serving(name)
                await mesh.wait_routable(name, ROUTED[name])
            addresses = {name: mesh.procs[name].address for name in MODULES}
            warmup = _samples(tmp / "warm", "Warm", 3)
            await direct(addresses, warmup[:1], 1)
            await through_pipeline(mesh.channel(), warmup[1:])

            rows = []
            for label, conc in (("sequential", 1), (f"{concurrency} at once", concurrency)):
                via = _samples(tmp / f"via-{conc}", f"Via{conc}", tracks)
                base = _samples(tmp / f"direct-{conc}", f"Direct{conc}", tracks)
                total_via, lat_via = await through_pipeline(
                    mesh.channel(), via, one_at_a_time=conc == 1
                )
                runs = await mesh.pipeline_runs().ListPipelineRuns(
                    router_pb2.ListPipelineRunsRequest(limit=tracks)
                )
                # A run's own span: created (event delivered) to track.ready published.
                in_run = [
                    r.updated_at.ToNanoseconds() / 1e9 - r.started_at.ToNanoseconds() / 1e9
                    for r in runs.runs
                ]
                total_direct, lat_direct = await direct(addresses, base, conc)
                rows.append((label, total_via, lat_via, in_run, total_direct, lat_direct))
            parts = await breakdown(
                mesh.channel(), mesh.procs["notifications"].address, mesh.state_dir
            )
        finally:
            await pipeline.stop()
            await mesh.close()
            await app.stop()
            await bus.stop()

    table = Table(title=f"Post-download pipeline, {tracks} tracks per row (all modules local)")
    for column in (
        "mode",
        "pipeline tracks/s",
        "direct tracks/s",
        "pipeline p50 ms",
        "in-run p50 ms",
        "direct p50 ms",
        "router share of p50",
        "throughput ratio",
    ):
        table.add_column(column, justify="right")
    for label, total_via, lat_via, in_run, total_direct, lat_direct in rows:
        p50_via = statistics.median(lat_via) * 1000
        p50_direct = statistics.median(lat_direct) * 1000
        table.add_row(
            label,
            f"{tracks / total_via:.1f}",
            f"{tracks / total_direct:.1f}",
            f"{p50_via:.1f}",
            f"{statistics.median(in_run) * 1000:.1f}",
            f"{p50_direct:.1f}",
            f"{(p50_via - p50_direct) / p50_via:.0%}",
            f"{(tracks / total_via) / (tracks / total_direct):.2f}x",
        )
    console.print(table)
    parts_table = Table(title="Where the router's time goes (p50 per operation)")
    parts_table.add_column("part")
    parts_table.add_column("ms", justify="right")
    parts_table.add_column("per run", justify="right")
    per_run = {"publish": 2, "proxy": 3, "run store": 1}  # for_source + track.ready; 3 steps
    for name, ms in parts:
        count = next(n for key, n in per_run.items() if key in name)
        parts_table.add_row(name, f"{ms:.2f}", f"x{count} = {ms * count:.1f} ms")
    console.print(parts_table)
    console.print(
        "router share = (pipeline latency - direct latency) / pipeline latency: the proxy hop, "
        "bus publish/deliver/ack of download.completed, for_source and track.ready, and the "
        "run store's writes (SQLite WAL; the run's creation fsynced). in-run = from the run's "
        "creation to track.ready published; the rest of the pipeline latency is the bus "
        "delivering download.completed to the pipeline and track.ready to the waiter."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(run(arguments.tracks, arguments.concurrency))


if __name__ == "__main__":
    main()
