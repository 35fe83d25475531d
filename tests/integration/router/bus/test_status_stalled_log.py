"""GetStatus while JetStream stalls answers within its read bound, not after the stalled
requests: with this router's own position of the log, no dead-letter count, and a warning that
says the figures are local because JetStream did not answer."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

from router.api import status_service
from router.api.status_service import StatusServicer
from router.routing.capabilities import load_catalog
from router.routing.registry import Registry
from router.routing.warnings import WarningBoard
from router.settings import RouterSection
from services.kit.observability.metrics import MeshMetrics
from soulspot.router.v1 import router_pb2
from tests.helpers.bus import BusHarness, bus_settings, completed, envelope
from tests.helpers.router import eventually

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

READ_S = 0.5
# Several read bounds, far below the stalled requests' own timeouts and the per-test timeout.
ANSWERED_WITHIN_S = 5.0


async def test_status_with_a_stalled_jetstream_answers_in_time_with_local_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_service, "STATUS_READ_S", READ_S)
    settings = bus_settings(backend="jetstream", nats_request_timeout_s=30.0)
    async with BusHarness(tmp_path, settings) as harness:
        assert harness.nats is not None
        await harness.publish(envelope(completed("d1")))
        await eventually(lambda: harness.bus.last_sequence >= 1, timeout=10.0)
        catalog = load_catalog()
        registry = Registry(catalog, RouterSection(), MeshMetrics())
        servicer = StatusServicer(registry, catalog, WarningBoard(), bus=harness.bus)

        harness.nats.popen.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(ANSWERED_WITHIN_S):
                # GetStatus reads nothing of its call's context.
                status = await servicer.GetStatus(router_pb2.GetStatusRequest(), None)  # type: ignore[arg-type]
        finally:
            harness.nats.popen.send_signal(signal.SIGCONT)

    assert status.last_sequence == harness.bus.last_sequence >= 1
    assert status.dead_letters == 0
    [warning] = [w for w in status.warnings if w.operation == "status"]
    assert "JetStream did not answer" in warning.status
    assert "this router's" in warning.status
    assert "dead-letter count is unknown" in warning.status
