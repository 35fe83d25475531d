"""Status and the dashboard show the same mesh from either of two routers on one JetStream.

Two router processes share one nats-server; two fake modules register with both; a durable
consumer is subscribed through the first router only and parks one event as a dead letter; a
download.completed runs its pipeline; a playlist watch is added through the first router.
Then GetStatus, `soulspot status --json` and the dashboard's /api/status, asked of each
router, agree on the modules and their health, the consumers and the router serving each,
the dead letters, the log's last sequence and the watched playlists; the pipeline runs and
dead letters listed through either router are the same. What is each router's own (when it
started, its circuit breakers, its warnings, the work it runs, its xDS clients, and the
subscribers connected to it) may differ, and the reply says which router answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from google.protobuf import duration_pb2

from router.http.convert import status_json
from services.kit.events.client import EventHandlers, RouterPublisher, Subscriber
from services.kit.rpc.channel import open_channel, wait_for_ready
from soulspot.common.v1 import references_pb2
from soulspot.common.v1.module_pb2 import MODULE_STATUS_ACTIVE
from soulspot.events.v1 import download_pb2
from soulspot.router.v1 import (
    event_bus_pb2_grpc,
    pipeline_runs_pb2_grpc,
    router_pb2,
    status_pb2_grpc,
    watches_pb2,
    watches_pb2_grpc,
)
from tests.helpers.processes import REPO, Process, free_port, start_module, start_router
from tests.helpers.router_cluster import READY_DEADLINE_S, every_router

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    import grpc

    from services.kit.security.tls import Transport
    from soulspot.events.v1 import envelope_pb2
    from tests.helpers.nats_server import NatsServerProcess

# Two routers, two modules and a command-line process start under the test's clock.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MODULES = ("k-primary", "k-backup")
CONSUMER = "status-watcher"
POISON = "dl-poison"
PLAYLIST = "37i9dQZF1DXcBWIGoYBM5M"
# How long the routers' views may take to agree: each watches module health and reads the
# shared log, consumer records and runs at its own pace.
AGREE_DEADLINE_S = 30.0
# What each router keeps for itself, dropped before two answers are compared: its name, its
# start, the warnings of its own calls, the work it runs and its xDS clients; of each module,
# when it saw its status change and the circuit breaker of its own calls to it.
OWN_KEYS = frozenset({"answered_by", "started_at", "warnings", "in_flight", "xds_clients"})
OWN_MODULE_KEYS = frozenset({"since", "breaker"})
# Of each consumer, its subscribers: they connect to the router serving it, which alone
# counts them.
OWN_CONSUMER_KEYS = frozenset({"subscribers"})


@pytest.fixture
def routers(tmp_path: Path, nats_server: NatsServerProcess) -> Iterator[list[tuple[Process, int]]]:
    """Two routers on the NATS server, each with its dashboard on a port of its own."""
    started: list[tuple[Process, int]] = []
    try:
        for index in range(2):
            http_port = free_port()
            router = start_router(
                tmp_path,
                free_port(),
                SOULSPOT_STATE_DIR=str(tmp_path / f"state-{index}"),
                SOULSPOT_ROUTER__HTTP_ADDRESS=f"127.0.0.1:{http_port}",
                SOULSPOT_BUS__BACKEND="jetstream",
                SOULSPOT_BUS__NATS_SERVERS=json.dumps([nats_server.url]),
            )
            started.append((router, http_port))
            asyncio.run(wait_for_ready(router.address, READY_DEADLINE_S, transport=router.client))
        yield started
    finally:
        for router, _ in started:
            router.stop()


@pytest.fixture
def modules(tmp_path: Path, routers: list[tuple[Process, int]]) -> Iterator[list[Process]]:
    """The fake modules, each registered with both routers."""
    both = every_router([r for r, _ in routers])
    started: list[Process] = []
    try:
        for priority, name in enumerate(MODULES):
            started.append(start_module(tmp_path, name, both, priority=10 - priority))
        yield started
    finally:
        for module in started:
            module.stop()


def _own_dropped(document: dict[str, Any]) -> dict[str, Any]:
    """A status document (GetStatus as the dashboard's or the command line's JSON) without
    what each router keeps for itself."""
    kept = {k: v for k, v in document.items() if k not in OWN_KEYS}
    kept["modules"] = [
        {k: v for k, v in m.items() if k not in OWN_MODULE_KEYS} for m in document["modules"]
    ]
    kept["consumers"] = [
        {k: v for k, v in c.items() if k not in OWN_CONSUMER_KEYS} for c in document["consumers"]
    ]
    return kept


async def _status(address: str, transport: Transport) -> router_pb2.GetStatusResponse:
    async with open_channel(address, transport=transport) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        reply: router_pb2.GetStatusResponse = await stub.GetStatus(
            router_pb2.GetStatusRequest(), timeout=10
        )
        return reply


async def _agreeing_statuses(
    routers: list[Process],
) -> tuple[list[router_pb2.GetStatusResponse], list[dict[str, Any]]]:
    """Each router's GetStatus once their shared views agree (or the last ones asked, at the
    deadline), with those views."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + AGREE_DEADLINE_S
    while True:
        replies = [await _status(r.address, r.client) for r in routers]
        views = [_own_dropped(status_json(reply)) for reply in replies]
        if views[0] == views[1] or loop.time() > ends:
            return replies, views
        await asyncio.sleep(0.2)


async def _until(
    predicate: Callable[[], Awaitable[bool]],
    what: str,
    timeout: float = 20.0,  # noqa: ASYNC109 (bounds the whole wait)
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():  # noqa: ASYNC110 (the state is another process's)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def _every_module_active(router: Process) -> bool:
    reply = await _status(router.address, router.client)
    active = {m.name for m in reply.modules if m.status == MODULE_STATUS_ACTIVE}
    return active == set(MODULES)


def _poisoning_handlers() -> EventHandlers:
    """download.progress handlers that fail the POISON download's event (and only it)."""
    handlers = EventHandlers()

    @handlers.on("download.progress")
    async def on_progress(
        event: download_pb2.DownloadProgress, envelope: envelope_pb2.EventEnvelope
    ) -> None:
        if event.download_id == POISON:
            raise RuntimeError("this download's progress cannot be handled")

    return handlers


async def _dead_letters(channel: grpc.aio.Channel) -> list[router_pb2.DeadLetter]:
    stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
    reply = await stub.ListDeadLetters(router_pb2.ListDeadLettersRequest(limit=100), timeout=10)
    return list(reply.dead_letters)


async def _runs(channel: grpc.aio.Channel) -> list[router_pb2.PipelineRun]:
    stub = pipeline_runs_pb2_grpc.PipelineRunServiceStub(channel)
    reply = await stub.ListPipelineRuns(router_pb2.ListPipelineRunsRequest(limit=100), timeout=10)
    return list(reply.runs)


@contextlib.asynccontextmanager
async def _mesh_in_use(routers: list[Process], tmp_path: Path) -> AsyncIterator[str]:
    """Through the first router: a subscribed durable consumer with one dead letter, a
    download.completed whose run ended, and a watched playlist; yields the completed
    event's id while the consumer's subscriber is still connected."""
    first = routers[0]
    async with open_channel(first.address, transport=first.client) as channel:
        subscriber = Subscriber(
            channel,
            consumer=CONSUMER,
            handlers=_poisoning_handlers(),
            max_attempts=1,
            max_backoff_s=1.0,
        )
        await subscriber.start()
        try:
            await subscriber.wait_connected(20)
            publish = RouterPublisher(channel, deadline_s=5.0)
            for download_id in ("dl-1", POISON, "dl-2"):
                await publish.publish(download_pb2.DownloadProgress(download_id=download_id))
            # Outside the routers' download folders: the run ends at once, refused.
            completed = await publish.publish(
                download_pb2.DownloadCompleted(
                    download_id="dl-3",
                    track=references_pb2.TrackReference(title="Song", artist="Band"),
                    file=references_pb2.FileReference(path=str(tmp_path / "elsewhere.flac")),
                    source="folder",
                    requested_by="cli",
                )
            )
            await watches_pb2_grpc.PlaylistWatchServiceStub(channel).AddPlaylistWatch(
                watches_pb2.AddPlaylistWatchRequest(
                    playlist_id=PLAYLIST, every=duration_pb2.Duration(seconds=3600)
                ),
                timeout=10,
            )

            async def parked() -> bool:
                return len(await _dead_letters(channel)) == 1

            async def run_ended() -> bool:
                runs = await _runs(channel)
                return [r.event_id for r in runs] == [completed.event_id] and all(
                    r.state != router_pb2.RUN_STATE_RUNNING for r in runs
                )

            async def watch_ran() -> bool:
                # A new watch runs at once: compared before, its run would change it midway.
                reply = await _status(first.address, first.client)
                return any(
                    w.HasField("last_run_at") and not w.running for w in reply.watched_playlists
                )

            await _until(parked, "the poisoned event parked as a dead letter")
            await _until(run_ended, "the download.completed's pipeline run ended")
            await _until(watch_ran, "the watched playlist's first run ended")
            yield completed.event_id
        finally:
            await subscriber.stop()


async def _lists(router: Process) -> tuple[list[Any], list[Any]]:
    """The dead letters and pipeline runs listed through one router."""
    async with open_channel(router.address, transport=router.client) as channel:
        letters = [
            (d.dead_letter_id, d.consumer, d.event.event_id) for d in await _dead_letters(channel)
        ]
        runs = [(r.run_id, r.event_id, r.state) for r in await _runs(channel)]
    return letters, runs


async def _cli_status(router: Process) -> dict[str, Any]:
    """`soulspot status --json --router <router>` as a process of its own."""
    assert router.pki_dir is not None
    soulspot = Path(sys.executable).parent / "soulspot"
    process = await asyncio.create_subprocess_exec(
        str(soulspot),
        "--pki-dir",
        str(router.pki_dir),
        "status",
        "--json",
        "--router",
        router.address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        # The generated contracts from this tree, as the mesh's own processes find them.
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen")])},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    document: dict[str, Any] = json.loads(out)
    return document


async def _dashboard_status(session: aiohttp.ClientSession, http_port: int) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{http_port}/api/status") as response:
        assert response.status == 200, await response.text()
        document: dict[str, Any] = await response.json()
        return document


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_status_cli_and_dashboard_show_the_same_mesh_from_either_router(
    routers: list[tuple[Process, int]],
    modules: list[Process],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    processes = [r for r, _ in routers]
    for router in processes:
        await _until(
            functools.partial(_every_module_active, router),
            f"every module active on {router.address}",
        )
    async with _mesh_in_use(processes, tmp_path) as completed_id:
        replies, views = await _agreeing_statuses(processes)
        assert views[0] == views[1], f"GetStatus differs:\nA: {views[0]}\nB: {views[1]}"
        for reply in replies:
            assert {m.name for m in reply.modules} == set(MODULES)
            assert reply.dead_letters == 1
            # Three download.progress, the download.completed and what the pipeline added.
            assert reply.last_sequence >= 4
            served = [c for c in reply.consumers if c.name == CONSUMER]
            assert served, f"{CONSUMER} missing from {reply.answered_by}'s status"
            assert served[0].served_by, "every router names the router serving the consumer"
            assert [w.playlist_id for w in reply.watched_playlists] == [PLAYLIST]
        assert [r.answered_by for r in replies] == [r.address for r in processes]
        # Subscribed through the first router: it serves the consumer and counts its
        # subscriber; the other names it and counts none.
        subscribers = [
            next(c.subscribers for c in reply.consumers if c.name == CONSUMER) for reply in replies
        ]
        assert subscribers == [1, 0]
        # Both name the first router as its server, as it names itself (answered_by).
        served_by = {
            c.served_by for reply in replies for c in reply.consumers if c.name == CONSUMER
        }
        assert served_by == {replies[0].answered_by}

        letters_a, runs_a = await _lists(processes[0])
        assert (letters_a, runs_a) == await _lists(processes[1])
        assert [consumer for _id, consumer, _event in letters_a] == [CONSUMER]
        assert [event_id for _run, event_id, _state in runs_a] == [completed_id]

        cli = [_own_dropped(await _cli_status(r)) for r in processes]
        assert cli[0] == cli[1], f"`soulspot status --json` differs:\nA: {cli[0]}\nB: {cli[1]}"
        assert cli[0]["dead_letters"] == 1

        dashboards = [_own_dropped(await _dashboard_status(http, port)) for _, port in routers]
        assert dashboards[0] == dashboards[1], (
            f"/api/status differs:\nA: {dashboards[0]}\nB: {dashboards[1]}"
        )
        assert dashboards[0] == views[0], "the dashboard shows what GetStatus answers"
