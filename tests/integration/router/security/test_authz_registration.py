"""Registration under mutual TLS: a module registers only as itself, with the capabilities and
priorities the policy grants; its own restart replaces its old stream; a gone module is
forgotten after gone_module_ttl_s."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from services.kit.rpc.errors import from_rpc_error
from soulspot.common.v1 import module_pb2
from soulspot.router.v1 import router_pb2
from tests.helpers.router import eventually
from tests.helpers.secure_mesh import CATALOG, LIBRARY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from services.kit.security.identity import Identity
    from tests.helpers.secure_mesh import SecureMesh

ACTIVE = module_pb2.MODULE_STATUS_ACTIVE


def _announce(name: str, address: str, *caps: tuple[str, int]) -> router_pb2.RegisterRequest:
    return router_pb2.RegisterRequest(
        announce=router_pb2.ModuleAnnouncement(
            name=name,
            address=address,
            capabilities=[
                router_pb2.CapabilityRegistration(capability=c, priority=p) for c, p in caps
            ],
        )
    )


class Registration:
    """One Register stream as `identity`, held open until `close()`."""

    def __init__(self, mesh: SecureMesh, identity: Identity, request: router_pb2.RegisterRequest):
        self._done = asyncio.Event()

        async def send() -> AsyncIterator[router_pb2.RegisterRequest]:
            yield request
            await self._done.wait()

        self.call = mesh.registry_stub(identity).Register(send(), timeout=20)

    async def first(self) -> router_pb2.RegisterResponse:
        response = await self.call.read()
        assert isinstance(response, router_pb2.RegisterResponse)
        return response

    async def refusal(self) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call.read()
        return caught.value

    def close(self) -> None:
        self._done.set()


def _fields(err: grpc.aio.AioRpcError) -> list[str]:
    detail = from_rpc_error(err).detail(error_details_pb2.BadRequest)
    assert detail is not None
    return [v.field for v in detail.field_violations]


async def test_a_module_cannot_register_under_the_name_of_a_live_module(mesh: SecureMesh) -> None:
    address = await mesh.module_server()
    real = Registration(mesh, LIBRARY, _announce("library", address, ("import.track", 10)))
    assert (await real.first()).registered.module == "library"
    impostor = Registration(mesh, CATALOG, _announce("library", address, ("import.track", 10)))
    err = await impostor.refusal()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _fields(err) == ["announce.name"]
    assert CATALOG.uri in (err.details() or "")
    real.close()


async def test_a_module_cannot_take_the_name_of_one_whose_stream_closed(mesh: SecureMesh) -> None:
    address = await mesh.module_server()
    real = Registration(mesh, LIBRARY, _announce("library", address, ("import.track", 10)))
    await real.first()
    real.close()
    await eventually(lambda: not mesh.app.registry.modules["library"].stream_open)
    impostor = Registration(mesh, CATALOG, _announce("library", address, ("import.track", 10)))
    err = await impostor.refusal()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert mesh.app.registry.modules["library"].owner == LIBRARY


async def test_capabilities_and_priorities_beyond_the_grant_are_refused(mesh: SecureMesh) -> None:
    address = await mesh.module_server()
    # The catalog is granted search.track only; import.track at 1000 would take every import.
    grab = Registration(mesh, CATALOG, _announce("catalog", address, ("import.track", 1000)))
    err = await grab.refusal()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _fields(err) == ["announce.capabilities[0]"]
    too_high = Registration(mesh, CATALOG, _announce("catalog", address, ("search.track", 6)))
    err = await too_high.refusal()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "priority 6" in (err.details() or "")
    assert "catalog" not in mesh.app.registry.modules


async def test_a_restarted_module_replaces_its_own_stream_that_has_not_closed(
    mesh: SecureMesh,
) -> None:
    old_address = await mesh.module_server()
    old = Registration(mesh, LIBRARY, _announce("library", old_address, ("import.track", 10)))
    await old.first()
    new_address = await mesh.module_server()
    new = Registration(mesh, LIBRARY, _announce("library", new_address, ("import.track", 10)))
    assert (await new.first()).registered.module == "library"
    entry = mesh.app.registry.modules["library"]
    assert entry.address == new_address
    # The old stream is ended by the router; the entry stays the new one's.
    assert await asyncio.wait_for(old.call.read(), 5) is grpc.aio.EOF
    await asyncio.sleep(0.1)
    assert mesh.app.registry.modules["library"] is entry
    assert entry.stream_open
    await eventually(lambda: entry.status == ACTIVE)
    new.close()


async def test_a_module_whose_stream_is_gone_is_forgotten_after_the_ttl(mesh: SecureMesh) -> None:
    address = await mesh.module_server()
    gone = Registration(mesh, LIBRARY, _announce("library", address, ("import.track", 10)))
    await gone.first()
    gone.close()
    await eventually(lambda: not mesh.app.registry.modules["library"].stream_open)
    # Listed (inactive) for gone_module_ttl_s (0.5 s here), then forgotten.
    assert "library" in mesh.app.registry.modules
    await eventually(lambda: "library" not in mesh.app.registry.modules, timeout=3.0)
