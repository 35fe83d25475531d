"""Pipeline runs in JetStream KV shared by several routers' engines: each download.completed
runs once whichever engines are handed it, and a router that stops renewing its lease has its
runs taken over and finished by another, without repeating a step that took effect."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from router.pipeline import Pipeline, load_pipeline_config
from router.pipeline import store as st
from router.pipeline.kv_store import KvRunStore
from soulspot.router.v1 import router_pb2
from tests.helpers.pipeline_standin import completed_event, until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.nats_server import NatsServerProcess
    from tests.helpers.pipeline_standin import Mesh


def kv_pipeline(mesh: Mesh, state: Path, nats_url: str, *, lease_s: float = 10.0) -> Pipeline:
    config = load_pipeline_config().model_copy(
        update={"startup_grace_s": 0.0, "deferred_sweep_s": 0.2}
    )
    store = KvRunStore([nats_url], lease_s=lease_s)
    return Pipeline(mesh.server.address, state, config=config, subscribe=False, store=store)


async def test_two_engines_handed_the_same_event_run_it_once(
    mesh: Mesh, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    first = kv_pipeline(mesh, tmp_path / "a", nats_server.url)
    second = kv_pipeline(mesh, tmp_path / "b", nats_server.url)
    await first.start()
    await second.start()
    try:
        run_ids = await asyncio.gather(
            first.handle_download_completed(*completed_event()),
            second.handle_download_completed(*completed_event()),
        )
        assert run_ids[0] == run_ids[1]
        await until(lambda: len(mesh.router.of_type("track.ready")) == 1)
        await first.wait_idle()
        await second.wait_idle()
        assert len(mesh.metadata.calls) == 1
        assert len(mesh.library.imports) == 1
        assert len(mesh.notify.calls) == 1
        assert len(mesh.router.of_type("track.ready")) == 1
        # Either router answers for the run: it lives in the shared KV, not in one router.
        for engine in (first, second):
            run = await engine.get_run(run_ids[0])
            assert run is not None
            assert run.state == router_pb2.RUN_STATE_COMPLETED
    finally:
        await first.stop()
        await second.stop()


async def test_only_one_of_many_creates_wins(nats_server: NatsServerProcess) -> None:
    stores = [KvRunStore([nats_server.url]) for _ in range(5)]
    for store in stores:
        await store.open()
    try:
        outcomes = await asyncio.gather(
            *(
                store.create_run(
                    event_id="ev-race",
                    correlation_id="c",
                    description="A - B",
                    trigger=b"t",
                    context={"steps": {}},
                    steps=[st.NewStep("import.track", "import.track", True)],
                )
                for store in stores
            )
        )
        assert len({run_id for run_id, _ in outcomes}) == 1
        assert sum(created for _, created in outcomes) == 1
    finally:
        for store in stores:
            await store.close()


async def test_a_stopped_routers_run_is_finished_by_another_without_a_second_import(
    mesh: Mesh, nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    mesh.library.hang = True  # the import takes effect, then its router goes away mid-call
    first = kv_pipeline(mesh, tmp_path / "a", nats_server.url, lease_s=1.0)
    second = kv_pipeline(mesh, tmp_path / "b", nats_server.url, lease_s=1.0)
    await first.start()
    await second.start()
    try:
        run_id = await first.handle_download_completed(*completed_event())
        await until(lambda: len(mesh.library.imports) == 1)
        mesh.library.hang = False
        await first.stop()  # its lease goes with it: the other router takes the run at once
        await until(lambda: len(mesh.router.of_type("track.ready")) == 1, timeout=20)
        await second.wait_idle()
        run = await second.get_run(run_id)
        assert run is not None
        assert run.state == router_pb2.RUN_STATE_COMPLETED
        assert "already done" in run.steps[1].detail
        assert len(mesh.library.imports) == 1
    finally:
        await second.stop()


async def test_a_lease_that_stops_moving_goes_stale_and_its_runs_move_once(
    nats_server: NatsServerProcess,
) -> None:
    # A router whose lease is not renewed within the others' lease_s: it stalled or died.
    silent = KvRunStore([nats_server.url], lease_s=3600.0)
    watchers = [KvRunStore([nats_server.url], lease_s=0.5) for _ in range(3)]
    await silent.open()
    for watcher in watchers:
        await watcher.open()
    try:
        run_id, created = await silent.create_run(
            event_id="ev-stale",
            correlation_id="c",
            description="A - B",
            trigger=b"t",
            context={"steps": {}},
            steps=[st.NewStep("import.track", "import.track", True)],
        )
        assert created
        # Nothing moves while the lease is fresh: the first look only notes its revision.
        assert [await w.take_over() for w in watchers] == [[], [], []]
        taken: list[list[str]] = []
        async with asyncio.timeout(10):
            while not any(taken):
                await asyncio.sleep(0.1)
                taken = list(await asyncio.gather(*(w.take_over() for w in watchers)))
        assert sorted(r for won in taken for r in won) == [run_id]  # exactly one watcher won it
        # The router that lost the run can no longer write it.
        with pytest.raises(st.LeaseLost) as lost:
            await silent.set_state(run_id, st.RUN_FAILED, "late")
        assert lost.value.run_id == run_id
    finally:
        await silent.close()
        for watcher in watchers:
            await watcher.close()
