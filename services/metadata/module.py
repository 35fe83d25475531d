"""The metadata module: what it serves and how it is built."""

from __future__ import annotations

from services.kit.module.runner import (
    Capability,
    ModuleParts,
    ModuleRuntime,
    ModuleSpec,
    ServiceBinding,
)
from services.metadata.enrich import Enricher
from services.metadata.musicbrainz_api import MusicBrainzClient
from services.metadata.servicer import MetadataServicer
from services.metadata.settings import MetadataSection, MetadataSettings
from soulspot.capabilities.v1 import metadata_pb2, metadata_pb2_grpc

__all__ = ["SPEC", "build"]

DEFAULT_PORT = 50065


def build(rt: ModuleRuntime) -> ModuleParts:
    section = rt.section if isinstance(rt.section, MetadataSection) else MetadataSection()
    client: MusicBrainzClient | None = None
    if not section.offline:
        client = MusicBrainzClient(
            section.musicbrainz_url, user_agent=section.user_agent, timeout=section.timeout_s
        )
    servicer = MetadataServicer(Enricher(client, offline=section.offline), rt.publisher)

    async def start() -> None:
        # Enrichment works offline, so the module always serves; the reason says how.
        reason = (
            "offline: tags only, no MusicBrainz lookups"
            if section.offline
            else f"MusicBrainz lookups via {section.musicbrainz_url} when reachable"
        )
        await rt.set_health(True, reason)

    async def stop() -> None:
        await servicer.outbox.close()
        if client is not None:
            await client.aclose()

    return ModuleParts(
        services=[
            ServiceBinding.of(
                metadata_pb2.DESCRIPTOR.services_by_name["MetadataService"],
                servicer,
                metadata_pb2_grpc.add_MetadataServiceServicer_to_server,
            )
        ],
        start=start,
        stop=stop,
    )


SPEC = ModuleSpec(
    name="metadata",
    default_port=DEFAULT_PORT,
    capabilities=[Capability("enrich.metadata", 10), Capability("metadata.read", 10)],
    factory=build,
    settings_cls=MetadataSettings,
)
