"""Shared helpers for the router's integration tests: the fake module (loaded from the e2e
folder, where it also runs as a process), a router in-process, metadata helpers."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from router.app import RouterApp
from router.settings import RouterSection, RouterSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.kit.observability.metrics import MeshMetrics

_FAKE_PATH = Path(__file__).resolve().parents[2] / "e2e" / "router" / "router_fake_module.py"


def _load_fake() -> object:
    name = "router_fake_module"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _FAKE_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_fake = _load_fake()
FakeModule = _fake.FakeModule  # type: ignore[attr-defined]
Behaviour = _fake.Behaviour  # type: ignore[attr-defined]

SEARCH = "/soulspot.capabilities.v1.SearchService/SearchTrack"


def router_app(metrics: MeshMetrics | None = None, **section: object) -> RouterApp:
    defaults: dict[str, object] = {
        "address": "127.0.0.1:0",
        "breaker_failures": 2,
        "breaker_cooldown": 0.5,
        "health_poll_interval": 0.1,
        "health_retry_interval": 0.05,
        "routing_table_ttl": 5.0,
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
