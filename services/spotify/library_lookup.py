"""Which search results the local library already holds: library.check_downloaded, asked
of the library module for every result at once (over the kit's capability channels: straight
to it when the router serves xDS, else through the router).

Best effort by design: a search answers within its own time whatever the library does, so a
lookup that fails or takes longer than its deadline counts as "not in the library".
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc

from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from soulspot.common.v1 import references_pb2

log = logging.getLogger("soulspot.spotify")

LIBRARY_SERVICE = library_pb2.DESCRIPTOR.services_by_name["LibraryService"].full_name


class LibraryLookup:
    """`await lookup.holds(tracks)`: one flag per track, False where nobody could say."""

    def __init__(
        self, channel: Callable[[str], grpc.aio.Channel | None], *, timeout_s: float
    ) -> None:
        # Asked per lookup with the service's name: ModuleRuntime.capability_channel.
        self._channel = channel
        self.timeout_s = timeout_s

    async def holds(self, tracks: Sequence[references_pb2.TrackReference]) -> list[bool]:
        channel = self._channel(LIBRARY_SERVICE) if self.timeout_s > 0 else None
        if channel is None or not tracks:
            return [False] * len(tracks)
        stub = library_pb2_grpc.LibraryServiceStub(channel)

        async def one(track: references_pb2.TrackReference) -> bool:
            request = library_pb2.CheckDownloadedRequest(track=track)
            answer = await stub.CheckDownloaded(request, timeout=self.timeout_s)
            return answer.downloaded

        outcomes = await asyncio.gather(*(one(t) for t in tracks), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            first = failures[0]
            reason = first.code().name if isinstance(first, grpc.aio.AioRpcError) else repr(first)
            log.debug(
                "library lookup failed for %d of %d results (%s): shown as not in the library",
                len(failures),
                len(tracks),
                reason,
            )
        return [o is True for o in outcomes]
