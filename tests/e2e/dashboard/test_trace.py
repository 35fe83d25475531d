"""One request followed across processes by its trace id.

A client starts a trace, searches and downloads through the router like `soulspot get`;
the download's events drive the router's pipeline through metadata, library and
notifications. Every process involved must have written JSON log lines carrying that one
trace id: the traceparent survived calls, events and pipeline steps.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

from services.kit.rpc.context import CORRELATION_ID_KEY, TRACEPARENT_KEY, new_traceparent
from services.kit.testing.sample_audio import DEFAULT_SAMPLE_TRACKS
from soulspot.capabilities.v1 import (
    download_pb2,
    download_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from tests.helpers.flows import (
    METADATA_ENV,
    folder_env,
    sample_source,
    start_stack,
    track_of,
    wait_event,
)
from tests.helpers.mesh import Mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROCESSES = ("router", "folder", "metadata", "library", "notifications")


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    # HTTP on a free port: the default 8080 may be taken on a developer machine.
    async with Mesh(tmp_path, env={"SOULSPOT_ROUTER__HTTP_ADDRESS": "127.0.0.1:0"}) as the_mesh:
        yield the_mesh


def _trace_lines(log: str, trace_id: str) -> list[dict[str, object]]:
    found = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a stray non-JSON line (an interpreter warning) is not ours to judge
        if isinstance(entry, dict) and entry.get("trace_id") == trace_id:
            found.append(entry)
    return found


async def test_one_trace_id_across_router_and_modules(mesh: Mesh, tmp_path: Path) -> None:
    sample = DEFAULT_SAMPLE_TRACKS[0]
    await start_stack(
        mesh,
        {
            "catalog": None,
            "folder": folder_env(tmp_path, sample_source(tmp_path)),
            "metadata": METADATA_ENV,
            "library": None,
            "notifications": None,
        },
    )
    root = new_traceparent()
    correlation_id = uuid.uuid4().hex
    metadata = ((TRACEPARENT_KEY, str(root)), (CORRELATION_ID_KEY, correlation_id))

    search = search_pb2_grpc.SearchServiceStub(mesh.channel())
    await search.SearchTrack(
        search_pb2.SearchTrackRequest(query=f"{sample['artist']} {sample['title']}"),
        metadata=metadata,
        timeout=10,
    )
    downloads = download_pb2_grpc.DownloadServiceStub(mesh.channel())
    await downloads.DownloadTrack(
        download_pb2.DownloadTrackRequest(track=track_of(sample), requested_by="cli"),
        metadata=metadata,
        timeout=30,
    )
    ready, _ = await wait_event(mesh, "track.ready", correlation_id=correlation_id, timeout=30)
    assert ready.traceparent.split("-")[1] == root.trace_id

    missing = {
        name: mesh.procs[name].log()[-1500:]
        for name in PROCESSES
        if not _trace_lines(mesh.procs[name].log(), root.trace_id)
    }
    assert not missing, f"no log line with trace id {root.trace_id} in {sorted(missing)}"
    # The router saw both the client's calls and the pipeline's steps under the one trace.
    router_methods = {
        str(e.get("method", "")) for e in _trace_lines(mesh.procs["router"].log(), root.trace_id)
    }
    assert "/soulspot.capabilities.v1.SearchService/SearchTrack" in router_methods
    assert "/soulspot.capabilities.v1.DownloadService/DownloadTrack" in router_methods
