"""The M3U file of a synced playlist: asked of the library (library.playlist) once the sync
is done, with every track in playlist order; tracks the library does not hold yet are left
out of the file and listed here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cli.console import console, err_console
from cli.router_connection import call
from cli.tables import describe_track
from services.kit.rpc.errors import MeshError
from soulspot.capabilities.v1 import library_pb2, library_pb2_grpc

if TYPE_CHECKING:
    import grpc
    from rich.console import Console

    from soulspot.common.v1 import references_pb2

WRITE_TIMEOUT_S = 60.0


async def write_m3u(
    channel: grpc.aio.Channel,
    name: str,
    tracks: list[tuple[int, references_pb2.TrackReference]],
    *,
    out: Console = console,
) -> bool:
    """Write the playlist's M3U in the library and report it on `out`; False when it was not
    written."""
    stub = library_pb2_grpc.LibraryServiceStub(channel)
    ordered = [track for _, track in sorted(tracks, key=lambda item: item[0])]
    try:
        answer = await call(
            stub.WritePlaylist(
                library_pb2.WritePlaylistRequest(name=name, tracks=ordered),
                timeout=WRITE_TIMEOUT_S,
            )
        )
    except MeshError as err:
        err_console.print(f"[red]playlist file not written:[/] {err.message}")
        return False
    out.print(f"playlist file: {answer.file.path} ({answer.written} tracks)", soft_wrap=True)
    if answer.missing_positions:
        err_console.print(
            f"[yellow]{len(answer.missing_positions)} tracks are not in the library yet and "
            "are left out of the playlist file:[/]"
        )
        for position in answer.missing_positions:
            err_console.print(f"  {position}. {describe_track(ordered[position - 1])}")
    return True
