"""The MetadataService gRPC servicer: enrich.metadata and metadata.read."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from services.kit.events.background_publish import Outbox
from soulspot.capabilities.v1 import metadata_pb2, metadata_pb2_grpc
from soulspot.events.v1 import track_pb2

if TYPE_CHECKING:
    import grpc

    from services.kit.module.runtime import Publisher
    from services.metadata.enrich import Enricher

log = logging.getLogger("soulspot.metadata")


class MetadataServicer(metadata_pb2_grpc.MetadataServiceServicer):
    def __init__(self, enricher: Enricher, publisher: Publisher) -> None:
        self._enricher = enricher
        self.outbox = Outbox(publisher)

    async def EnrichMetadata(
        self,
        request: metadata_pb2.EnrichMetadataRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metadata_pb2.EnrichMetadataResponse:
        outcome = await self._enricher.enrich(request.track, request.file, offline=request.offline)
        await self.outbox.publish(
            track_pb2.MetadataEnriched(
                track=outcome.track,
                file=outcome.file,
                musicbrainz_matched=outcome.musicbrainz_matched,
                lookup_skipped_reason=outcome.lookup_skipped_reason,
                changed_tags=outcome.changed_tags,
                cover_embedded=outcome.cover_embedded,
                cover_skipped_reason=outcome.cover_skipped_reason,
            ),
            subject=outcome.file.path,
        )
        log.info(
            "metadata enriched",
            extra={
                "path": outcome.file.path,
                "changed_tags": outcome.changed_tags,
                "musicbrainz_matched": outcome.musicbrainz_matched,
                "cover_embedded": outcome.cover_embedded,
                "cover_skipped_reason": outcome.cover_skipped_reason,
            },
        )
        return metadata_pb2.EnrichMetadataResponse(
            track=outcome.track,
            file=outcome.file,
            musicbrainz_matched=outcome.musicbrainz_matched,
            lookup_skipped_reason=outcome.lookup_skipped_reason,
            changed_tags=outcome.changed_tags,
            cover_embedded=outcome.cover_embedded,
            cover_skipped_reason=outcome.cover_skipped_reason,
        )

    async def ReadTags(
        self,
        request: metadata_pb2.ReadTagsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metadata_pb2.ReadTagsResponse:
        outcome = await self._enricher.read(request.file)
        return metadata_pb2.ReadTagsResponse(track=outcome.track, file=outcome.file)
