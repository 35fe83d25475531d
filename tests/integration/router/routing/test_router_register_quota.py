"""Register streams per caller are bounded: past the limit a new stream is refused with
RESOURCE_EXHAUSTED and a QuotaFailure naming the setting, and a closed stream frees its place."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
from google.rpc import error_details_pb2

from services.kit.rpc.channel import open_channel
from services.kit.rpc.errors import from_rpc_error
from soulspot.router.v1 import registry_pb2_grpc, router_pb2
from tests.helpers.router import router_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class _Registration:
    """A Register stream held open until closed."""

    def __init__(self, stub: registry_pb2_grpc.RegistryServiceAsyncStub, name: str) -> None:
        self._done = asyncio.Event()
        announce = router_pb2.ModuleAnnouncement(name=name, address="127.0.0.1:1")
        self._first = router_pb2.RegisterRequest(announce=announce)
        self.call = stub.Register(self._requests())

    async def _requests(self) -> AsyncIterator[router_pb2.RegisterRequest]:
        yield self._first
        await self._done.wait()

    async def answer(self) -> router_pb2.RegisterResponse:
        message = await asyncio.wait_for(self.call.read(), 10)
        assert isinstance(message, router_pb2.RegisterResponse)
        return message

    async def close(self) -> None:
        self._done.set()
        self.call.cancel()


async def test_register_streams_per_caller_are_bounded() -> None:
    app = router_app(max_register_streams_per_identity=2)
    await app.start()
    held: list[_Registration] = []
    try:
        async with open_channel(app.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            for name in ("one", "two"):
                held.append(_Registration(stub, name))
                assert (await held[-1].answer()).HasField("registered")
            extra = _Registration(stub, "three")
            try:
                await extra.answer()
            except grpc.aio.AioRpcError as err:
                refused = err
            else:
                raise AssertionError("a third Register stream was accepted")
            finally:
                await extra.close()
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            quota = from_rpc_error(refused).detail(error_details_pb2.QuotaFailure)
            assert quota is not None
            described = quota.violations[0].description
            assert "SOULSPOT_ROUTER__MAX_REGISTER_STREAMS_PER_IDENTITY=2" in described
            assert app.registry.get("three") is None
            await held.pop().close()
            again = _Registration(stub, "four")
            held.append(again)
            async with asyncio.timeout(10):
                while True:  # the closed stream's place comes back once the router sees it
                    try:
                        assert (await again.answer()).HasField("registered")
                        break
                    except grpc.aio.AioRpcError:
                        await again.close()
                        held.remove(again)
                        await asyncio.sleep(0.05)
                        again = _Registration(stub, "four")
                        held.append(again)
    finally:
        for registration in held:
            await registration.close()
        await app.stop(0)
