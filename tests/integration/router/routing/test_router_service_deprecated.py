"""The deprecated RouterService still answers every family of its RPCs (registration, routing
table, status, pipeline runs; the bus is covered in test_router_registration) from the same
servicers as the services with one job each."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest

from router.app import RouterApp
from router.pipeline import Pipeline
from router.settings import RouterSection, RouterSettings
from services.kit.rpc.channel import open_channel
from soulspot.router.v1 import pipeline_runs_pb2_grpc, router_pb2, router_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from soulspot.router.v1 import status_pb2_grpc


async def test_status_and_routing_table_answer_alike(
    module: Callable[..., Awaitable[Any]],
    router_stub: router_pb2_grpc.RouterServiceAsyncStub,
    status_stub: status_pb2_grpc.StatusServiceAsyncStub,
) -> None:
    await module("kept", 1)
    old = await router_stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
    new = await status_stub.GetStatus(router_pb2.GetStatusRequest(), timeout=5)
    assert [m.name for m in old.modules] == [m.name for m in new.modules] == ["kept"]
    # One StatusServicer behind both: the same start time.
    assert old.started_at == new.started_at
    call = router_stub.WatchRoutingTable(router_pb2.WatchRoutingTableRequest(), timeout=5)
    first = await anext(aiter(call))
    routes = {r.capability: r for r in first.routes}
    assert [p.module for p in routes["search.track"].providers] == ["kept"]
    call.cancel()


async def test_pipeline_runs_answer_through_router_service(tmp_path: Path) -> None:
    pipeline = Pipeline(None, tmp_path, subscribe=False)
    app = RouterApp(RouterSettings(router=RouterSection(address="127.0.0.1:0")), pipeline=pipeline)
    await app.start()
    await pipeline.start(app.address)
    try:
        async with open_channel(app.address) as channel:
            old = router_pb2_grpc.RouterServiceStub(channel)
            new = pipeline_runs_pb2_grpc.PipelineRunServiceStub(channel)
            request = router_pb2.ListPipelineRunsRequest()
            assert not (await old.ListPipelineRuns(request, timeout=5)).runs
            assert not (await new.ListPipelineRuns(request, timeout=5)).runs
            missing = router_pb2.GetPipelineRunRequest(run_id="nope")
            for stub in (old, new):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetPipelineRun(missing, timeout=5)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await pipeline.stop()
        await app.stop(0)
