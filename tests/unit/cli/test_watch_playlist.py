"""`soulspot watch-playlist`: a playlist as first argument means `add`; the interval is read
as people write it, and a bad one stops the command with a message before any call."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from cli.commands import watch_playlist
from cli.main import app
from soulspot.router.v1 import watches_pb2

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import grpc


class _Stub:
    """The service as the command sees it: records requests, answers as the router would."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def AddPlaylistWatch(self, request: Any, timeout: float) -> Any:  # noqa: ASYNC109
        self.requests.append(request)
        watch = watches_pb2.PlaylistWatch(playlist_id=request.playlist_id, every=request.every)
        return watches_pb2.AddPlaylistWatchResponse(watch=watch, created=True)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> _Stub:
    recorded = _Stub()

    def run(router: str | None, body: Callable[[grpc.aio.Channel], Awaitable[int]]) -> None:
        code: int = asyncio.run(body(None))  # type: ignore[arg-type]
        raise SystemExit(code)

    monkeypatch.setattr(watch_playlist, "run_on_router", run)
    monkeypatch.setattr(watch_playlist, "_stub", lambda channel: recorded)
    return recorded


@pytest.mark.parametrize("prefix", [[], ["add"]])
def test_a_playlist_first_means_add_with_the_interval_in_seconds(
    stub: _Stub, prefix: list[str]
) -> None:
    result = CliRunner().invoke(app, ["watch-playlist", *prefix, "pl123", "--every", "1h30m"])
    assert result.exit_code == 0, result.output
    [request] = stub.requests
    assert (request.playlist_id, request.every.seconds) == ("pl123", 5400)
    assert "watching playlist pl123 every 1h30m" in result.output


def test_a_bad_interval_is_refused_before_any_call(stub: _Stub) -> None:
    result = CliRunner().invoke(app, ["watch-playlist", "pl123", "--every", "soon"])
    assert result.exit_code == 2
    assert "--every" in result.output
    assert stub.requests == []
