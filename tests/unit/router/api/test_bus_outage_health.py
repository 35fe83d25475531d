"""The bus's health after start follows the process's NATS connections: a connection down makes
the gate refuse and the NATS-backed services NOT_SERVING with "JetStream at ... unreachable
since ...", the overall health is never touched, and the last state wins however fast the
connections change."""

from __future__ import annotations

import asyncio

import pytest

from router.api.bus_gate import BusGate, OutageHealth
from router.bus.jetstream.connection import NatsLinks

SERVERS = ["nats://n1:4222", "nats://n2:4222"]
SERVICES = ["soulspot.router.v1.EventBusService", "soulspot.router.v1.PipelineRunService"]


class Health:
    """Records each service's last status, as the router's health servicer keeps it."""

    def __init__(self) -> None:
        self.statuses: dict[str, tuple[bool, str | None]] = {}

    async def set_status(self, service: str, serving: bool, reason: str | None = None) -> None:
        await asyncio.sleep(0)  # a real health update yields to the loop
        self.statuses[service] = (serving, reason)


async def settled(outage: OutageHealth) -> None:
    async with asyncio.timeout(5):
        while outage._task is not None and not outage._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_a_lost_connection_closes_the_gate_and_its_services_until_it_is_back() -> None:
    links, gate, health = NatsLinks(), BusGate(), Health()
    outage = OutageHealth(gate, SERVERS, SERVICES, health.set_status, links=links)
    outage.start()
    try:
        await settled(outage)
        assert gate.is_open
        assert health.statuses == {}  # nothing to say while every connection is up

        links.went_down(1, SERVERS)
        await settled(outage)
        assert not gate.is_open
        reason = gate.reason or ""
        assert reason.startswith("JetStream at nats://n1:4222, nats://n2:4222 unreachable since ")
        assert reason.endswith("Z")
        assert health.statuses == dict.fromkeys(SERVICES, (False, reason))
        # Callers and status get since when, not the servers (anyone may ask for status).
        public = gate.public_reason()
        assert public.startswith("the event log (JetStream) is not reachable from this router")
        assert public.endswith(f"since {reason.rsplit(' ', 1)[-1]}; retry")
        assert "nats://" not in public
        assert gate.warning().status == public

        # A second connection down later changes nothing: the first says since when.
        links.went_down(2, SERVERS)
        await settled(outage)
        assert gate.reason == reason
        links.came_back(1)
        await settled(outage)
        assert not gate.is_open  # one is still down
        links.came_back(2)
        await settled(outage)
        assert gate.is_open
        assert health.statuses == dict.fromkeys(SERVICES, (True, None))
    finally:
        await outage.stop()


async def test_the_last_change_wins_when_changes_come_faster_than_the_health_is_set() -> None:
    links, gate, health = NatsLinks(), BusGate(), Health()
    outage = OutageHealth(gate, SERVERS, SERVICES, health.set_status, links=links)
    outage.start()
    try:
        for _ in range(3):
            links.went_down(1, SERVERS)
            links.came_back(1)
        links.went_down(1, SERVERS)
        await settled(outage)
        assert not gate.is_open
        assert all(not serving for serving, _ in health.statuses.values())
        links.came_back(1)
        await settled(outage)
        assert health.statuses == dict.fromkeys(SERVICES, (True, None))
    finally:
        await outage.stop()


async def test_connections_to_other_servers_and_a_stopped_follower_change_nothing() -> None:
    links, gate, health = NatsLinks(), BusGate(), Health()
    outage = OutageHealth(gate, SERVERS, SERVICES, health.set_status, links=links)
    outage.start()
    links.went_down(1, ["nats://elsewhere:4222"])
    await settled(outage)
    assert gate.is_open
    await outage.stop()
    links.went_down(2, SERVERS)
    await asyncio.sleep(0)
    assert gate.is_open
    assert health.statuses == {}


def test_the_overall_health_is_not_an_outages_to_change() -> None:
    with pytest.raises(ValueError, match="overall health"):
        OutageHealth(BusGate(), SERVERS, ["", *SERVICES], Health().set_status)


def test_the_start_up_wait_is_told_before_an_outage() -> None:
    gate = BusGate()
    gate.lost("JetStream at nats://n1:4222 unreachable since 2026-01-01T00:00:00Z", 1.0)
    gate.close("waiting for JetStream at nats://n1:4222")
    assert gate.reason == "waiting for JetStream at nats://n1:4222"
    gate.open()
    assert (gate.reason or "").endswith("unreachable since 2026-01-01T00:00:00Z")
    gate.regained()
    assert gate.is_open
