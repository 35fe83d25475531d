"""The pipeline on a JetStream KV store stops within a bound when one of its loops lost a
cancellation in a NATS request (as nats-py's can on Python 3.11): the store's lease renewal,
the engine's deferred-step sweep and its takeover loop each end, cancelled again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from router.pipeline import Pipeline, load_pipeline_config
from router.pipeline.kv_store import KvRunStore
from tests.helpers.lost_cancellation import LosingOneCancellation, ended_within

if TYPE_CHECKING:
    from pathlib import Path

    from tests.helpers.nats_server import NatsServerProcess
    from tests.helpers.pipeline_standin import Mesh

# Far below the per-test timeout, above a stop's own bounds (a few seconds): a stop that waits
# on a loop forever fails here instead of hanging the suite.
STOP_WITHIN_S = 20.0
WAIT_S = 10.0


async def test_a_lease_renewal_that_lost_its_cancellation_does_not_hold_the_close(
    nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KvRunStore([nats_server.url], lease_s=0.3)  # renewed every 0.1 s
    await store.open()
    renew = LosingOneCancellation(store._renew)
    monkeypatch.setattr(store, "_renew", renew)
    await ended_within(renew.entered.wait(), WAIT_S)

    await ended_within(store.close(), STOP_WITHIN_S)

    assert renew.lost.is_set()
    # The steps after the loop still ran: the lease was given up, not left to go stale.
    other = KvRunStore([nats_server.url])
    await other.open()
    try:
        assert not await other._has_lease(store.owner)
    finally:
        await other.close()


@pytest.mark.parametrize("call", ["deferred", "take_over"])
async def test_an_engine_loop_that_lost_its_cancellation_does_not_hold_the_stop(
    call: str,
    mesh: Mesh,
    nats_server: NatsServerProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # deferred: the sweep of deferred steps asks it at once; take_over: the takeover loop,
    # every lease_s / 2.
    config = load_pipeline_config().model_copy(
        update={"startup_grace_s": 0.0, "deferred_sweep_s": 0.1}
    )
    store = KvRunStore([nats_server.url], lease_s=0.4)
    held = LosingOneCancellation(getattr(store, call))
    monkeypatch.setattr(store, call, held)
    pipeline = Pipeline(mesh.server.address, tmp_path, config=config, subscribe=False, store=store)
    await pipeline.start()
    stopped = False
    try:
        await ended_within(held.entered.wait(), WAIT_S)
        await ended_within(pipeline.stop(), STOP_WITHIN_S)
        stopped = True
    finally:
        if not stopped:
            await store.close()
    assert held.lost.is_set()
