"""The metadata module: what it serves and how it is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kit.module.spec import Capability, ModuleParts, ModuleSpec, ServiceBinding
from services.metadata.cover_art import CoverArtClient
from services.metadata.enrich import Enricher
from services.metadata.musicbrainz_api import MusicBrainzClient
from services.metadata.servicer import MetadataServicer
from services.metadata.settings import DEFAULT_PORT, MetadataSection, MetadataSettings
from soulspot.capabilities.v1 import metadata_pb2, metadata_pb2_grpc

if TYPE_CHECKING:
    from services.kit.module.runtime import ModuleRuntime

__all__ = ["SPEC", "build"]


def build(runtime: ModuleRuntime[MetadataSection]) -> ModuleParts:
    section = runtime.section
    client: MusicBrainzClient | None = None
    covers: CoverArtClient | None = None
    if not section.offline:
        client = MusicBrainzClient(
            section.musicbrainz_url, user_agent=section.user_agent, timeout=section.timeout_s
        )
        if section.cover_art:
            covers = CoverArtClient(
                section.cover_art_url,
                user_agent=section.user_agent,
                timeout=section.cover_art_timeout_s,
                max_bytes=section.cover_art_max_bytes,
                size=section.cover_art_size,
            )
    enricher = Enricher(
        client,
        covers=covers,
        offline=section.offline,
        roots=[*section.tag_dirs, runtime.settings.library_root],
        forbidden=[runtime.settings.state_dir],
    )
    servicer = MetadataServicer(enricher, runtime.publisher)

    async def start() -> None:
        # Enrichment works offline, so the module always serves; the reason says how.
        reason = (
            "offline: tags only, no MusicBrainz lookups"
            if section.offline
            else f"MusicBrainz lookups via {section.musicbrainz_url} when reachable"
            + (f", front covers from {section.cover_art_url}" if covers is not None else "")
        )
        await runtime.set_health(True, reason)

    async def stop() -> None:
        await servicer.outbox.close()
        if client is not None:
            await client.aclose()
        if covers is not None:
            await covers.aclose()

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
    section_cls=MetadataSection,
    settings_cls=MetadataSettings,
)
