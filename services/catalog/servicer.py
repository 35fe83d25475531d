"""CatalogServicer: the catalog's SearchService, search.track over the library's own index."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from soulspot.capabilities.v1 import search_pb2, search_pb2_grpc

if TYPE_CHECKING:
    import grpc

    from services.catalog.indexer import CatalogIndexer
    from services.catalog.settings import CatalogSection

__all__ = ["CatalogServicer"]


class CatalogServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, indexer: CatalogIndexer, section: CatalogSection) -> None:
        self.indexer = indexer
        self.section = section

    async def SearchTrack(
        self,
        request: search_pb2.SearchTrackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> search_pb2.SearchTrackResponse:
        limit = min(request.limit or self.section.default_limit, self.section.max_limit)
        # UNAVAILABLE while the index cannot be opened: the router falls back to another
        # search.track provider.
        index = self.indexer.require_index()
        hits = await asyncio.to_thread(index.search, request.query, limit)
        return search_pb2.SearchTrackResponse(
            results=[
                search_pb2.SearchResult(
                    track=hit.track, score=hit.score, source="catalog", in_library=True
                )
                for hit in hits
            ]
        )
