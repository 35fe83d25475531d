"""The soulseek module: download.track (priority 10) and friends through slskd."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from services.domain.downloads.registry import DownloadRegistry, DownloadServicerBase
from services.domain.downloads.store import FILE_NAME
from services.kit.module.periodic import Periodic
from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from services.kit.rpc.errors import MeshError, Unavailable, abort_with
from services.soulseek.candidate_store import CandidateStore
from services.soulseek.downloader import SoulseekDownloader
from services.soulseek.settings import DEFAULT_PORT, SoulseekSection, SoulseekSettings
from services.soulseek.slskd_api import SlskdClient
from soulspot.capabilities.v1 import download_pb2, download_pb2_grpc
from soulspot.events.v1 import download_pb2 as download_events_pb2

if TYPE_CHECKING:
    import grpc

    from services.kit.module.runtime import ModuleRuntime

log = logging.getLogger("soulspot.soulseek")
FailureKind = download_events_pb2.FailureKind

PROBE_TIMEOUT_S = 5.0
NOT_CONFIGURED = (
    "slskd is not configured: set SOULSPOT_SOULSEEK__URL and SOULSPOT_SOULSEEK__API_KEY"
)


class SlskdHealthProbe:
    """Keeps the module's health in step with slskd: reachable, key accepted, logged in."""

    def __init__(
        self,
        runtime: ModuleRuntime[SoulseekSection],
        client: SlskdClient | None,
        interval_s: float,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self._periodic = Periodic("slskd health probe", interval_s, self.check)

    async def check(self) -> bool:
        if self.client is None:
            await self.runtime.set_health(False, NOT_CONFIGURED)
            return False
        try:
            # A black-holed address would otherwise hold the probe for the client's timeout.
            health = await asyncio.wait_for(self.client.health(), PROBE_TIMEOUT_S)
        except TimeoutError:
            reason = f"slskd at {self.client.base_url} did not answer within {PROBE_TIMEOUT_S:g}s"
            await self.runtime.set_health(False, reason)
            return False
        await self.runtime.set_health(health.usable, health.reason)
        return health.usable

    async def start(self) -> None:
        await self.check()
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()


class SoulseekDownloadServicer(DownloadServicerBase):
    def __init__(
        self,
        registry: DownloadRegistry,
        downloader: SoulseekDownloader | None,
        probe: SlskdHealthProbe,
    ) -> None:
        super().__init__(registry)
        self.downloader = downloader
        self.probe = probe

    async def DownloadTrack(
        self,
        request: download_pb2.DownloadTrackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> download_pb2.DownloadTrackResponse:
        try:
            # A stale "down" must not refuse work once slskd is back: probe again first.
            if not self.probe.runtime.serving and not await self.probe.check():
                raise Unavailable(f"soulseek cannot download: {self.probe.runtime.health_reason}")
            if self.downloader is None:
                raise Unavailable(NOT_CONFIGURED)
            return await self.downloader.start(request)
        except MeshError as err:
            await abort_with(context, err)


def build(runtime: ModuleRuntime[SoulseekSection]) -> ModuleParts:
    section = runtime.section
    client = SlskdClient(section.url, section.api_key) if section.url else None
    db_path = runtime.settings.state_dir / runtime.name / FILE_NAME
    registry = DownloadRegistry(
        runtime.publisher,
        module=runtime.name,
        progress_interval_s=section.progress_interval_s,
        db_path=db_path,
    )
    # The candidates of a download are kept beside its record, in the same file.
    plans = CandidateStore(db_path) if client is not None else None
    downloader = (
        SoulseekDownloader(client, section, registry, plans) if client is not None else None
    )
    probe = SlskdHealthProbe(runtime, client, section.probe_interval_s)
    servicer = SoulseekDownloadServicer(registry, downloader, probe)

    async def start() -> None:
        await probe.start()
        interrupted = await registry.recover()
        if downloader is not None:
            await downloader.resume(interrupted)
            return
        for record in interrupted:
            await registry.fail(
                record,
                f"interrupted by a restart, and soulseek cannot follow it: {NOT_CONFIGURED}",
                kind=FailureKind.FAILURE_KIND_BACKEND_UNAVAILABLE,
                can_retry=True,
            )

    async def stop() -> None:
        await probe.stop()
        await registry.shutdown()
        if plans is not None:
            # After the shutdown: the download tasks it ends still write to it.
            plans.close()
        if client is not None:
            await client.aclose()

    runtime.extras["registry"] = registry
    return ModuleParts(
        services=[
            ServiceBinding.of(
                download_pb2.DESCRIPTOR.services_by_name["DownloadService"],
                servicer,
                download_pb2_grpc.add_DownloadServiceServicer_to_server,
            )
        ],
        start=start,
        stop=stop,
    )


SPEC = ModuleSpec(
    name="soulseek",
    default_port=DEFAULT_PORT,
    capabilities=[
        Capability("download.track", 10),
        Capability("download.status", 10),
        Capability("download.cancel", 10),
        Capability("download.statistics", 10),
    ],
    factory=build,
    section_cls=SoulseekSection,
    settings_cls=SoulseekSettings,
)
