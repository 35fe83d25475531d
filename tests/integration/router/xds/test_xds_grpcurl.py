"""The real grpcurl binary dials `xds:///` with GRPC_XDS_BOOTSTRAP on a plaintext mesh (grpcurl
speaks xDS only with -plaintext) and reaches the top module."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import descriptor_pb2

from services.kit.rpc.xds_bootstrap import BOOTSTRAP_FILE_ENV, write_bootstrap
from soulspot.capabilities.v1 import search_pb2
from tests.helpers.xds_clients import bootstrap

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from google.protobuf.descriptor import FileDescriptor

    from router.app import RouterApp
    from tests.helpers.fake_module import FakeModule

    Make = Callable[..., Awaitable[FakeModule]]

GRPCURL = Path(sys.executable).with_name("grpcurl")


def _protoset(path: Path) -> Path:
    """The search contract and what it imports, as a descriptor set (no reflection through
    xDS: the route table has routes for capability methods only)."""
    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        files.file.append(proto)

    add(search_pb2.DESCRIPTOR)
    path.write_bytes(files.SerializeToString())
    return path


async def test_grpcurl_calls_a_capability_through_xds(
    xds_router: RouterApp, xds_module: Make, tmp_path: Path
) -> None:
    await xds_module("primary", 10)
    await xds_module("backup", 5)
    bootstrap_file = write_bootstrap(tmp_path / "xds.json", bootstrap(xds_router.address))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS_BOOTSTRAP")}
    env[BOOTSTRAP_FILE_ENV] = str(bootstrap_file)
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        "-protoset",
        str(_protoset(tmp_path / "search.protoset")),
        "-d",
        '{"query": "artist - title"}',
        "xds:///soulspot.capabilities.v1.SearchService",
        "soulspot.capabilities.v1.SearchService/SearchTrack",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    reply = json.loads(out)
    assert reply["results"][0]["source"] == "primary"
