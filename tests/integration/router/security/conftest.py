"""The secure mesh fixture: a router with mutual TLS, forgetting gone modules after 0.5 s."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.helpers.secure_mesh import SecureMesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[SecureMesh]:
    mesh = SecureMesh(tmp_path, gone_module_ttl_s=0.5)
    await mesh.start()
    try:
        yield mesh
    finally:
        await mesh.stop()
