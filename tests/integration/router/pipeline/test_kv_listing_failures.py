"""A listing of the pipeline's JetStream KV that still fails (NATS out of reach past the
listing's own retries, as through a long failover) costs the pipeline a round, never a loop:
the deferred sweep goes on sweeping, and a takeover whose read of the runs failed does it at
the next round, the runs of a router gone meanwhile included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import nats.js.errors as js_errors
import pytest

from router.pipeline import Pipeline, load_pipeline_config
from router.pipeline import store as st
from router.pipeline.kv_store import KvRunStore
from tests.helpers.kv_stores import new_run, opened_stores
from tests.helpers.pipeline_standin import until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.nats_server import NatsServerProcess
    from tests.helpers.pipeline_standin import Mesh

STEPS = [st.NewStep("import.track", "import.track", True)]


def failing_once(method: Any, calls: list[str]) -> Any:
    """`method`, whose first call fails as a listing through a failover does."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        calls.append("call")
        if len(calls) == 1:
            raise js_errors.ServiceUnavailableError
        return await method(*args, **kwargs)

    return call


async def test_the_deferred_sweep_goes_on_after_a_listing_failed(
    mesh: Mesh, nats_server: NatsServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_pipeline_config().model_copy(
        update={"startup_grace_s": 0.0, "deferred_sweep_s": 0.1}
    )
    store = KvRunStore([nats_server.url])
    pipeline = Pipeline(mesh.server.address, tmp_path, config=config, subscribe=False, store=store)
    calls: list[str] = []
    monkeypatch.setattr(store, "deferred", failing_once(store.deferred, calls))
    await pipeline.start()
    try:
        await until(lambda: len(calls) >= 3, timeout=20)
    finally:
        await pipeline.stop()


async def test_a_takeover_whose_run_listing_failed_takes_a_gone_routers_run_next_round(
    nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened_stores(KvRunStore([nats_server.url], lease_s=3600.0) for _ in range(2)) as (
        watcher,
        leaving,
    ):
        assert await watcher.take_over() == []  # the first scan: nothing to take
        assert await watcher.take_over() == []  # notes the other router's lease
        run_id = await new_run(leaving, "ev-gone", STEPS)
        await leaving.close()  # its lease goes with it: its run is the watcher's to take
        calls: list[str] = []
        monkeypatch.setattr(watcher, "_all", failing_once(watcher._all, calls))
        with pytest.raises(js_errors.ServiceUnavailableError):
            await watcher.take_over()
        assert await watcher.take_over() == [run_id]
