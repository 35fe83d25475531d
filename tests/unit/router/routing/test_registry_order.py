"""The registry's order of a capability's providers: routable first, higher priority first,
ties by name, and equal priorities taking turns among the candidates of each call."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from router.routing.capabilities import load_catalog
from router.routing.registry import ACTIVE, INACTIVE, Registry
from router.settings import RouterSection
from soulspot.router.v1 import router_pb2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SEARCH = "search.track"


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    found = Registry(load_catalog(), RouterSection())
    try:
        yield found
    finally:
        await found.close()


def _announce(
    registry: Registry, name: str, priority: int, *, requires: tuple[str, ...] = (), port: int = 1
) -> None:
    announcement = router_pb2.ModuleAnnouncement(
        name=name,
        address=f"127.0.0.1:{port}",
        capabilities=[
            router_pb2.CapabilityRegistration(
                capability=SEARCH, priority=priority, required_modules=list(requires)
            )
        ],
    )
    entry = registry.register_static(announcement)
    registry.set_health(entry, ACTIVE, "serving")


def _names(registry: Registry) -> list[str]:
    return [entry.name for entry, _offer in registry.providers(SEARCH)]


async def test_providers_put_routable_ones_first_then_priority_then_name(
    registry: Registry,
) -> None:
    # Registered out of name order, so a tie kept in registration order would show.
    _announce(registry, "mid-b", 10, port=1)
    _announce(registry, "mid-a", 10, port=2)
    _announce(registry, "high", 20, port=3)
    _announce(registry, "down", 50, port=4)
    _announce(registry, "tripped", 40, port=5)
    _announce(registry, "helper", 1, port=6)
    _announce(registry, "needs-helper", 30, requires=("helper",), port=7)
    assert _names(registry) == [
        "down",
        "tripped",
        "needs-helper",
        "high",
        "mid-a",
        "mid-b",
        "helper",
    ]

    down = registry.get("down")
    assert down is not None
    registry.set_health(down, INACTIVE, "health check failed")
    tripped = registry.get("tripped")
    assert tripped is not None
    for _ in range(registry.settings.breaker_failures):
        tripped.breaker.record_failure()
    helper = registry.get("helper")
    assert helper is not None
    registry.set_health(helper, INACTIVE, "health check failed")

    # Unhealthy, breaker open, or a required module unhealthy: after every routable one,
    # still best first among themselves.
    assert _names(registry) == [
        "high",
        "mid-a",
        "mid-b",
        "down",
        "tripped",
        "needs-helper",
        "helper",
    ]
    assert [e.name for e in registry.ordered(SEARCH)] == ["high", "mid-a", "mid-b"]

    # The required module is back: the module that needs it takes its place by priority.
    registry.set_health(helper, ACTIVE, "serving")
    assert _names(registry) == [
        "needs-helper",
        "high",
        "mid-a",
        "mid-b",
        "helper",
        "down",
        "tripped",
    ]


async def test_candidates_of_equal_priority_take_turns_behind_the_higher_ones(
    registry: Registry,
) -> None:
    _announce(registry, "mid-c", 10, port=1)
    _announce(registry, "mid-a", 10, port=2)
    _announce(registry, "mid-b", 10, port=3)
    _announce(registry, "high", 20, port=4)
    _announce(registry, "low", 5, port=5)
    _announce(registry, "down", 30, port=6)
    down = registry.get("down")
    assert down is not None
    registry.set_health(down, INACTIVE, "health check failed")

    turns = [[e.name for e in registry.candidates(SEARCH)] for _ in range(4)]
    assert turns == [
        ["high", "mid-a", "mid-b", "mid-c", "low"],
        ["high", "mid-b", "mid-c", "mid-a", "low"],
        ["high", "mid-c", "mid-a", "mid-b", "low"],
        ["high", "mid-a", "mid-b", "mid-c", "low"],
    ]
    # The canonical order does not take turns.
    assert [e.name for e in registry.ordered(SEARCH)] == ["high", "mid-a", "mid-b", "mid-c", "low"]
