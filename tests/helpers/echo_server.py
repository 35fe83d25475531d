"""A KitServer serving the Echo service in its own process, for the graceful-shutdown test.

Run as `python -m tests.helpers.echo_server [grace_s]` from the repository root: it prints
its port on stdout, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import sys

from services.kit.observability.logging import setup_logging
from services.kit.rpc.server import KitServer
from tests.helpers.echo_service import Echo


async def main() -> None:
    setup_logging("kittest-subprocess", "INFO")
    server = KitServer("kittest", grace_s=float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    Echo().add_to(server)
    port = await server.start()
    print(port, flush=True)
    await server.serve()


if __name__ == "__main__":
    asyncio.run(main())
