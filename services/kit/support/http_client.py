"""The lifetime of an HTTP API client: one pooled httpx.AsyncClient, closed with the client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

    import httpx


class PooledHttpClient:
    """Base of the mesh's HTTP API clients (slskd, Spotify, MusicBrainz): usable as
    `async with Client(...) as client:`; the subclass creates `self._http`."""

    _http: httpx.AsyncClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
