"""Front covers from the Cover Art Archive, by MusicBrainz release id; never fatal.

`GET <base>/release/<release mbid>/front-<size>` answers 307 with the image's address (404
when the release or its front image is unknown). The image is read up to a size bound and
accepted only when its first bytes say JPEG or PNG. Anything else (unreachable, 404, too big,
not an image) gives a result with no image and the reason, so enrichment goes on without a
cover.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import httpx

from services.kit.support.http_client import PooledHttpClient
from services.metadata.audio import CoverImage

__all__ = [
    "DEFAULT_COVER_ART_URL",
    "CoverArtClient",
    "CoverArtResult",
    "CoverSize",
    "image_mime",
]

log = logging.getLogger("soulspot.metadata")

DEFAULT_COVER_ART_URL = "https://coverartarchive.org"
# The archive's documented thumbnails: "front" is the original upload, which can be many MiB.
CoverSize = Literal["front", "front-250", "front-500", "front-1200"]

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_mime(data: bytes) -> str | None:
    """image/jpeg or image/png by the data's magic bytes; None for anything else."""
    if data.startswith(_JPEG_MAGIC):
        return "image/jpeg"
    if data.startswith(_PNG_MAGIC):
        return "image/png"
    return None


@dataclass(frozen=True)
class CoverArtResult:
    """The cover found, or none and why."""

    image: CoverImage | None
    reason: str = ""


class _NoCover(Exception):
    """Internal: why this release gets no cover."""


class CoverArtClient(PooledHttpClient):
    """Fetches front covers; one client per process."""

    def __init__(
        self,
        base_url: str = DEFAULT_COVER_ART_URL,
        *,
        user_agent: str,
        timeout: float = 10.0,
        max_bytes: int = 10 * 1024 * 1024,
        size: CoverSize = "front-500",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._max_bytes = max_bytes
        self._size = size
        # The archive redirects to the image's host: follow it, but only a few hops.
        self._http = httpx.AsyncClient(
            headers={"User-Agent": user_agent},
            timeout=timeout,
            follow_redirects=True,
            max_redirects=5,
        )

    async def front(self, release_mbid: str) -> CoverArtResult:
        """The release's front cover, or no image and the reason (never raises for the
        archive's or the network's trouble)."""
        url = f"{self.base_url}/release/{release_mbid}/{self._size}"
        try:
            data = await self._download(url)
        except _NoCover as err:
            log.info("no cover art", extra={"release": release_mbid, "reason": str(err)})
            return CoverArtResult(None, str(err))
        mime = image_mime(data)
        if mime is None:
            reason = (
                f"the Cover Art Archive's answer for release {release_mbid} is not a JPEG or PNG"
            )
            log.info("no cover art", extra={"release": release_mbid, "reason": reason})
            return CoverArtResult(None, reason)
        return CoverArtResult(CoverImage(data, mime))

    async def _download(self, url: str) -> bytes:
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code == 404:
                    raise _NoCover("the Cover Art Archive has no front cover for this release")
                if response.status_code >= 400:
                    raise _NoCover(f"the Cover Art Archive answered {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise _NoCover(self._too_big(int(declared)))
                data = bytearray()
                # Counted while reading: a missing or false Content-Length cannot get past it.
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self._max_bytes:
                        raise _NoCover(self._too_big(len(data)))
                return bytes(data)
        except httpx.TooManyRedirects as err:
            raise _NoCover(f"the Cover Art Archive redirected too often: {err}") from err
        except httpx.HTTPError as err:
            raise _NoCover(
                f"the Cover Art Archive is unreachable at {self.base_url}: {err}"
            ) from err

    def _too_big(self, size: int) -> str:
        return (
            f"the cover image is larger than {self._max_bytes} bytes "
            f"({size}; SOULSPOT_METADATA__COVER_ART_MAX_BYTES)"
        )
