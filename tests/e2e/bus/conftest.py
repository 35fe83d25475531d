"""Fixtures for the bus's end-to-end tests: a router process to start, kill -9 and restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.kit.security.tls import use_transport
from tests.helpers.bus_process import BusProcess
from tests.helpers.pki import PKI_DIR_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def bus_process(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BusProcess]:
    # Parametrized indirectly with SOULSPOT_BUS__* settings ({"synchronous": "NORMAL"}).
    proc = BusProcess(tmp_path, **getattr(request, "param", {}))
    # The test's channels speak to it as the command line, over mutual TLS, and so do the
    # `soulspot` commands it runs in-process.
    previous = use_transport(proc.client)
    monkeypatch.setenv(PKI_DIR_ENV, str(proc.pki_dir))
    try:
        yield proc
    finally:
        proc.stop()
        use_transport(previous)
