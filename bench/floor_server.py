"""Serve a floor's two raw-bytes streaming methods (Publish, Subscribe) on loopback and say
its port through a file, as the bus bench's floors (the gRPC floor, the relay) are served."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from services.kit.rpc.channel import SERVER_OPTIONS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


async def start_floor_server(
    service: str,
    publish: Callable[..., Any],
    subscribe: Callable[..., Any],
    port_file: Path,
) -> grpc.aio.Server:
    """Start `service` with `publish` and `subscribe` as its stream-stream methods (no
    serializers: bytes in, bytes out) on a free loopback port, then write the port to
    `port_file`."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_registered_method_handlers(
        service,
        {
            "Publish": grpc.stream_stream_rpc_method_handler(publish),
            "Subscribe": grpc.stream_stream_rpc_method_handler(subscribe),
        },
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # Written whole, then renamed: the bench reads the port as soon as the file exists.
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)
    return server
