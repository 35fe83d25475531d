"""Two router processes on a three-node NATS JetStream cluster, under a publish burst from
retrying publishers: kill -9 of one NATS node, and separately of one router. No acked event is
lost or stored twice, every acked event reaches its durable consumer (whose subscriber is
given both routers' addresses: one router serves the consumer, the other hands it over when
it is killed), and each download.completed has exactly one pipeline run, whichever router
took it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from services.kit.events.client import RouterPublisher, Subscriber
from services.kit.events.retrying_publisher import RetryingPublisher
from services.kit.rpc.channel import open_channel
from soulspot.common.v1 import references_pb2
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import event_bus_pb2_grpc, pipeline_runs_pb2_grpc, router_pb2
from tests.helpers.nats_cluster import NatsCluster
from tests.helpers.router_cluster import every_router, recorded_progress, start_routers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import grpc

    from tests.helpers.processes import Process

# Three NATS nodes and two routers start under the test's clock; the burst rides out a
# JetStream leader election.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PUBLISHERS = 4
PER_PUBLISHER = 60


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    # The routers' mesh CA (start_router's folder): the routers connect with mutual TLS.
    with NatsCluster(tmp_path, pki_dir=tmp_path / "pki") as nats:
        yield nats


@pytest.fixture
def routers(tmp_path: Path, cluster: NatsCluster) -> Iterator[list[Process]]:
    started = start_routers(
        tmp_path,
        cluster.urls,
        replicas=3,
        SOULSPOT_ROUTER__PIPELINE_LEASE_S="2",
        # A consumer served by the killed router moves to the other within seconds.
        SOULSPOT_BUS__CONSUMER_LEASE_S="2",
    )
    try:
        yield started
    finally:
        for router in started:
            router.stop()


def progress(index: int) -> download_pb2.DownloadProgress:
    return download_pb2.DownloadProgress(download_id=f"dl-{index}", percent=50.0)


async def _burst(channel: grpc.aio.Channel, first: int, during: Callable[[], None]) -> list[str]:
    """PUBLISHERS retrying publishers, PER_PUBLISHER events each; `during` runs (in a thread)
    once a third of the events are acked. Returns the ids of every acked event."""
    acked: list[str] = []
    third = asyncio.Event()

    async def publisher(index: int) -> None:
        publish = RetryingPublisher(RouterPublisher(channel, deadline_s=3.0), max_backoff_s=1.0)
        for n in range(PER_PUBLISHER):
            stored = await publish.publish(progress(first + index * PER_PUBLISHER + n))
            acked.append(stored.event_id)
            if len(acked) >= PUBLISHERS * PER_PUBLISHER // 3:
                third.set()

    async def chaos() -> None:
        await third.wait()
        await asyncio.to_thread(during)

    async with asyncio.timeout(120):
        await asyncio.gather(*(publisher(i) for i in range(PUBLISHERS)), chaos())
    return acked


async def _stored(channel: grpc.aio.Channel, event_type: str) -> Counter[str]:
    """How many times each event id of `event_type` is in the log."""
    stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
    seen: Counter[str] = Counter()
    token = ""
    while True:
        page = await stub.ListEvents(
            router_pb2.ListEventsRequest(
                event_types=[event_type], limit=500, oldest_first=True, page_token=token
            ),
            timeout=10,
        )
        seen.update(e.event_id for e in page.events)
        token = page.next_page_token
        if not token:
            return seen


@dataclass
class ChaosRun:
    acked: list[str]  # every event whose publish was acknowledged
    first_burst: set[str]  # acked during the burst that lost a NATS node
    stored: Counter[str]  # event id -> copies in the log
    delivered: set[str]  # event ids the durable consumer was handed


async def _chaos(cluster: NatsCluster, routers: list[Process]) -> ChaosRun:
    """A durable consumer whose subscriber round-robins over both routers (the one holding
    the consumer's lease serves it, the other refuses until it takes the lease over); a burst
    during which one NATS node is killed -9 (then restarted), another during which one router
    is killed -9."""
    both = every_router(routers)
    handlers, delivered = recorded_progress()

    async with open_channel(both, transport=routers[0].client) as channel:
        subscriber = Subscriber(channel, consumer="chaos", handlers=handlers, max_backoff_s=1.0)
        await subscriber.start()
        await subscriber.wait_connected(20)
        try:
            acked = await _burst(channel, 0, lambda: cluster.kill(1))
            cluster.restart(1)
            first_burst = set(acked)
            acked += await _burst(channel, 10_000, routers[0].kill)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    while not delivered >= set(acked):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)  # deliveries arrive on the subscriber's stream
            stored = await _stored(channel, "download.progress")
        finally:
            await subscriber.stop()
    return ChaosRun(acked, first_burst, stored, delivered)


async def test_no_acked_event_is_lost_or_stored_twice_when_a_nats_node_or_a_router_dies(
    cluster: NatsCluster, routers: list[Process]
) -> None:
    run = await _chaos(cluster, routers)
    assert len(run.acked) == 2 * PUBLISHERS * PER_PUBLISHER
    missing = set(run.acked) - set(run.stored)
    assert not missing, f"{len(missing)} acked events are missing from the log"
    assert [i for i, n in run.stored.items() if n > 1] == [], "an event is stored twice"


async def test_every_acked_event_reaches_its_durable_consumer_whichever_router_stored_it(
    cluster: NatsCluster, routers: list[Process]
) -> None:
    run = await _chaos(cluster, routers)
    undelivered = set(run.acked) - run.delivered
    assert not undelivered, (
        f"{len(undelivered)} of {len(run.acked)} acked events never delivered"
        f" ({len(undelivered & run.first_burst)} of them from the NATS node's burst)"
    )


async def test_each_download_completed_has_one_pipeline_run_across_routers(
    routers: list[Process], tmp_path: Path
) -> None:
    both = every_router(routers)
    async with open_channel(both, transport=routers[0].client) as channel:
        publish = RetryingPublisher(RouterPublisher(channel, deadline_s=3.0), max_backoff_s=1.0)
        completed = []
        for index in range(20):
            if index == 10:
                routers[0].kill()  # the other router takes the pipeline consumer and runs
            # Outside the routers' download folders: each run ends at once, refused.
            payload = download_pb2.DownloadCompleted(
                download_id=f"dl-{index}",
                track=references_pb2.TrackReference(title=f"t{index}", artist="a"),
                file=references_pb2.FileReference(path=str(tmp_path / f"elsewhere-{index}.flac")),
                source="folder",
                requested_by="cli",
            )
            completed.append((await publish.publish(payload)).event_id)
        runs_stub = pipeline_runs_pb2_grpc.PipelineRunServiceStub(channel)
        async with asyncio.timeout(60):
            while True:
                runs = (
                    await runs_stub.ListPipelineRuns(
                        router_pb2.ListPipelineRunsRequest(limit=100), timeout=10
                    )
                ).runs
                if len(runs) >= len(completed) and all(
                    r.state != router_pb2.RUN_STATE_RUNNING for r in runs
                ):
                    break
                await asyncio.sleep(0.2)
    assert sorted(r.event_id for r in runs) == sorted(completed)
    assert {r.state for r in runs} == {router_pb2.RUN_STATE_FAILED}
