"""An in-process router for tests (`router_app`), with the metadata and waiting helpers the
router's tests share; the modules it routes to are `tests.helpers.fake_module`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from router.app import RouterApp
from router.settings import RouterSection, RouterSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.kit.observability.metrics import MeshMetrics

SEARCH = "/soulspot.capabilities.v1.SearchService/SearchTrack"


def router_app(metrics: MeshMetrics | None = None, **section: object) -> RouterApp:
    defaults: dict[str, object] = {
        "address": "127.0.0.1:0",
        "breaker_failures": 2,
        "breaker_cooldown_s": 0.5,
        "health_poll_interval_s": 0.1,
        "health_retry_interval_s": 0.05,
        "routing_table_ttl_s": 5.0,
    }
    defaults.update(section)
    return RouterApp(RouterSettings(router=RouterSection.model_validate(defaults)), metrics=metrics)


def md(metadata: object) -> dict[str, str]:
    """Metadata pairs as a dict (text values only)."""
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}  # type: ignore[attr-defined]


async def eventually(check: Callable[[], object], timeout: float = 3.0) -> None:  # noqa: ASYNC109
    """Wait until check() is truthy (state that changes in the background)."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeout
    while not check():
        if loop.time() > ends:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
