"""`soulspot worker`: serve playlist jobs from the shared work queue until stopped."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from cli.console import console
from cli.identity import instance_name
from cli.playlist_worker import WORK_QUEUE, PlaylistWorker
from cli.router_connection import RouterOption, router_address
from services.kit.rpc.channel import open_channel


def worker(
    consumer: Annotated[
        str, typer.Option("--consumer", help="The work queue (durable consumer) to serve.")
    ] = WORK_QUEUE,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Jobs handled at once.")
    ] = 1,
    router: RouterOption = None,
) -> None:
    """Serve playlist jobs from the shared queue until stopped (Ctrl-C or SIGTERM)."""
    raise typer.Exit(asyncio.run(_worker(consumer, concurrency, router_address(router))))


async def _worker(consumer: str, concurrency: int, router: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_channel(router) as channel:
        workers = [
            PlaylistWorker(channel, consumer=consumer, name=f"{instance_name()}-w{n}")
            for n in range(1, concurrency + 1)
        ]
        for w in workers:
            await w.start()
        console.print(f"worker serving {consumer!r} on {router} ({concurrency} at a time)")
        try:
            await stop.wait()
        finally:
            for w in workers:
                await w.stop()
        console.print(f"worker stopped after {sum(w.handled for w in workers)} jobs")
    return 0
