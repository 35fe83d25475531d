"""A small real module for router tests: SearchService, DownloadService and PlaylistService
with behaviour knobs (answer, hang, fail with a code), registering through the kit.

Run as a process from the repository root: `python -m tests.helpers.fake_module --name soulseek
--priority 10 --router 127.0.0.1:50051 [--port 0] [--behaviour answer|hang|fail]
[--code UNAVAILABLE]`; it prints `READY <port>` once serving. SOULSPOT_FAKE_BEHAVIOUR /
SOULSPOT_FAKE_CODE set the same knobs from the environment. Tests in the same process use
`FakeModule` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from services.kit.module.registration import RouterRegistration
from services.kit.observability.logging import setup_logging
from services.kit.rpc.errors import abort_with, bad_request, error_for
from services.kit.rpc.server import KitServer
from services.kit.security.identity import Identity
from services.kit.security.tls import transport_for, use_transport
from services.kit.support.settings import KitSettings
from soulspot.capabilities.v1 import (
    download_pb2,
    download_pb2_grpc,
    playlist_pb2,
    playlist_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from soulspot.common.v1 import references_pb2
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Context = grpc.aio.ServicerContext[Any, Any]
SERVICES = (
    "soulspot.capabilities.v1.SearchService",
    "soulspot.capabilities.v1.DownloadService",
    "soulspot.capabilities.v1.PlaylistService",
)
DEFAULT_CAPABILITIES = ("search.track", "download.track", "download.status", "playlist.tracks")


@dataclass
class Behaviour:
    """What the module does with a call: "answer", "hang" or "fail" (with `code`)."""

    mode: str = "answer"
    code: str = "UNAVAILABLE"
    message: str = "fake failure"
    # Streams: how many items, and whether to fail after the first one.
    items: int = 3
    fail_after_first: bool = False


@dataclass
class FakeModule:
    name: str
    priority: int = 0
    behaviour: Behaviour = field(default_factory=Behaviour)
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    required_modules: tuple[str, ...] = ()
    calls: int = 0
    # Titles of the tracks DownloadTrack was asked for, in order.
    downloads: list[str] = field(default_factory=list)
    last_metadata: dict[str, str] = field(default_factory=dict)
    server: KitServer | None = None
    registration: RouterRegistration | None = None

    async def start(self, address: str = "127.0.0.1:0") -> str:
        server = KitServer(self.name, address, validate_requests=True, grace_s=0.5)
        search = _Search(self)
        download = _Download(self)
        playlist = _Playlist(self)
        server.add_service(
            lambda s: search_pb2_grpc.add_SearchServiceServicer_to_server(search, s), SERVICES[0]
        )
        server.add_service(
            lambda s: download_pb2_grpc.add_DownloadServiceServicer_to_server(download, s),
            SERVICES[1],
        )
        server.add_service(
            lambda s: playlist_pb2_grpc.add_PlaylistServiceServicer_to_server(playlist, s),
            SERVICES[2],
        )
        await server.start()
        self.server = server
        return server.address

    @property
    def address(self) -> str:
        assert self.server is not None
        return self.server.address

    def announcement(self) -> router_pb2.ModuleAnnouncement:
        return router_pb2.ModuleAnnouncement(
            name=self.name,
            address=self.address,
            version="test",
            capabilities=[
                router_pb2.CapabilityRegistration(
                    capability=c, priority=self.priority, required_modules=self.required_modules
                )
                for c in self.capabilities
            ],
        )

    async def register(self, router_address: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        self.registration = RouterRegistration(router_address, self.announcement())
        await self.registration.start()
        if not await self.registration.wait_connected(timeout):
            raise RuntimeError(f"{self.name} could not register with {router_address}")

    async def stop(self) -> None:
        if self.registration is not None:
            await self.registration.stop()
        if self.server is not None:
            await self.server.stop(0)

    async def act(self, context: Context) -> None:
        """Count the call and apply the behaviour; returns only when the call may answer."""
        self.calls += 1
        self.last_metadata = {
            k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)
        }
        mode = self.behaviour.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "fail":
            code = grpc.StatusCode[self.behaviour.code]
            details = []
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                details.append(bad_request({"query": "rejected by " + self.name}))
            await abort_with(context, error_for(code, self.behaviour.message, details=details))


class _Search(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, module: FakeModule) -> None:
        self.module = module

    async def SearchTrack(
        self, request: search_pb2.SearchTrackRequest, context: Context
    ) -> search_pb2.SearchTrackResponse:
        await self.module.act(context)
        return search_pb2.SearchTrackResponse(
            results=[
                search_pb2.SearchResult(
                    track=references_pb2.TrackReference(title=request.query, artist="Fake"),
                    score=1.0,
                    source=self.module.name,
                )
            ]
        )


class _Download(download_pb2_grpc.DownloadServiceServicer):
    def __init__(self, module: FakeModule) -> None:
        self.module = module

    async def DownloadTrack(
        self, request: download_pb2.DownloadTrackRequest, context: Context
    ) -> download_pb2.DownloadTrackResponse:
        await self.module.act(context)
        self.module.downloads.append(request.track.title)
        return download_pb2.DownloadTrackResponse(
            download_id=f"{self.module.name}-{self.module.calls}",
            state=download_pb2.DOWNLOAD_STATE_QUEUED,
            source=self.module.name,
        )

    async def GetDownload(
        self, request: download_pb2.GetDownloadRequest, context: Context
    ) -> download_pb2.GetDownloadResponse:
        await self.module.act(context)
        return download_pb2.GetDownloadResponse(
            download_id=request.download_id,
            state=download_pb2.DOWNLOAD_STATE_IN_PROGRESS,
            source=self.module.name,
        )

    async def CancelDownload(
        self, request: download_pb2.CancelDownloadRequest, context: Context
    ) -> download_pb2.CancelDownloadResponse:
        # Announced by some tests yet never implemented: the router must try the next module.
        self.module.calls += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "cancel is not implemented here")

    async def GetDownloadStatistics(
        self, request: download_pb2.GetDownloadStatisticsRequest, context: Context
    ) -> download_pb2.GetDownloadStatisticsResponse:
        await self.module.act(context)
        return download_pb2.GetDownloadStatisticsResponse(started=self.module.calls)


class _Playlist(playlist_pb2_grpc.PlaylistServiceServicer):
    def __init__(self, module: FakeModule) -> None:
        self.module = module

    async def ListPlaylistTracks(
        self, request: playlist_pb2.ListPlaylistTracksRequest, context: Context
    ) -> AsyncIterator[playlist_pb2.ListPlaylistTracksResponse]:
        await self.module.act(context)
        total = self.module.behaviour.items
        for position in range(total):
            if position == 1 and self.module.behaviour.fail_after_first:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "stream broke")
            yield playlist_pb2.ListPlaylistTracksResponse(
                track=references_pb2.TrackReference(
                    title=f"{self.module.name}-{position}", artist="Fake"
                ),
                position=position,
                total=total,
                playlist_name=request.playlist_id,
            )


async def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--router", default="")
    parser.add_argument("--behaviour", default=os.environ.get("SOULSPOT_FAKE_BEHAVIOUR", "answer"))
    parser.add_argument("--code", default=os.environ.get("SOULSPOT_FAKE_CODE", "UNAVAILABLE"))
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.name, args.log_level)
    # Like a real module: its own identity, from SOULSPOT_TLS__* (tests.helpers.pki).
    settings = KitSettings()
    use_transport(transport_for(Identity.module(args.name), settings.tls, settings.state_dir))
    module = FakeModule(args.name, args.priority, Behaviour(mode=args.behaviour, code=args.code))
    await module.start(f"127.0.0.1:{args.port}")
    if args.router:
        module.registration = RouterRegistration(args.router, module.announcement())
        await module.registration.start()
    print(f"READY {module.server.port if module.server else 0}", flush=True)
    assert module.server is not None
    try:
        await module.server.serve()
    finally:
        if module.registration is not None:
            await module.registration.stop()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
