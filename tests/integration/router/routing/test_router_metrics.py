"""The proxy and the breakers count on the router's own metrics registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from services.kit.observability.metrics import MeshMetrics
from soulspot.capabilities.v1 import search_pb2
from tests.helpers.fake_module import Behaviour
from tests.helpers.router import eventually, router_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from router.app import RouterApp
    from soulspot.capabilities.v1 import search_pb2_grpc

REQUEST = search_pb2.SearchTrackRequest(query="artist - title")
CAPABILITY = "search.track"


@pytest.fixture
def metrics() -> MeshMetrics:
    return MeshMetrics()


@pytest.fixture
async def router(metrics: MeshMetrics) -> AsyncIterator[RouterApp]:
    """The conftest's router, counting on a registry of its own (breaker_failures=2)."""
    app = router_app(metrics)
    await app.start()
    yield app
    await app.stop(0)


def _value(metrics: MeshMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_calls_fallbacks_and_breaker_states_reach_the_router_metrics(
    metrics: MeshMetrics,
    module: Callable[..., Awaitable[Any]],
    search: search_pb2_grpc.SearchServiceAsyncStub,
) -> None:
    await module("first", 10, behaviour=Behaviour(mode="fail", code="UNAVAILABLE"))
    await module("second", 5)
    assert _value(metrics, "soulspot_breaker_state", module="first") == 0

    response = await search.SearchTrack(REQUEST, timeout=5)
    assert response.results[0].source == "second"
    calls = "soulspot_capability_calls_total"
    assert _value(metrics, calls, capability=CAPABILITY, module="second", code="OK") == 1
    assert _value(metrics, calls, capability=CAPABILITY, module="first", code="UNAVAILABLE") == 1
    fallbacks = "soulspot_capability_fallbacks_total"
    assert (
        _value(metrics, fallbacks, capability=CAPABILITY, from_module="first", to_module="second")
        == 1
    )
    seconds = "soulspot_capability_call_duration_seconds_count"
    assert _value(metrics, seconds, capability=CAPABILITY, module="second") == 1
    assert _value(metrics, "soulspot_breaker_state", module="first") == 0  # one failure of two

    await search.SearchTrack(REQUEST, timeout=5)
    assert _value(metrics, "soulspot_breaker_state", module="first") == 2  # open
    assert _value(metrics, "soulspot_breaker_state", module="second") == 0
    assert b'soulspot_breaker_state{module="first"} 2.0' in metrics.exposition()

    # An open breaker skips the module: no attempt, no fallback counted for it.
    await search.SearchTrack(REQUEST, timeout=5)
    assert _value(metrics, calls, capability=CAPABILITY, module="first", code="UNAVAILABLE") == 2
    assert _value(metrics, calls, capability=CAPABILITY, module="second", code="OK") == 3
    # The cool-down (0.5 s) half-opens it without any call.
    await eventually(lambda: _value(metrics, "soulspot_breaker_state", module="first") == 1)
