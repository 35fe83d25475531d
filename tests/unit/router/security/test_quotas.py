"""Per-caller stream quotas: counted by verified identity, plaintext callers by peer host,
refused with RESOURCE_EXHAUSTED and a QuotaFailure naming the setting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pytest
from google.rpc import error_details_pb2

from router.security.quotas import StreamQuota, quota_key
from services.kit.rpc.errors import ResourceExhausted
from services.kit.security.identity import SAN_PROPERTY

if TYPE_CHECKING:
    import grpc


class _Context:
    """The two things quota_key reads from a servicer context."""

    def __init__(self, peer: str, sans: list[bytes] | None = None) -> None:
        self._peer = peer
        self._sans = sans

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, Any]:
        return {SAN_PROPERTY: self._sans} if self._sans else {}


def _key(context: _Context) -> str:
    return quota_key(cast("grpc.aio.ServicerContext[Any, Any]", context))


def test_verified_identity_is_the_key_whatever_the_address() -> None:
    first = _Context("ipv4:10.0.0.1:5000", [b"spiffe://soulspot/module/library"])
    second = _Context("ipv4:10.0.0.2:6000", [b"spiffe://soulspot/module/library"])
    assert _key(first) == _key(second) == "spiffe://soulspot/module/library"


def test_plaintext_callers_count_per_peer_host_not_per_connection() -> None:
    one = _key(_Context("ipv4:127.0.0.1:5000"))
    other_port = _key(_Context("ipv4:127.0.0.1:6000"))
    other_host = _key(_Context("ipv4:10.1.1.1:5000"))
    v6 = _key(_Context("ipv6:[::1]:5000"))
    assert one == other_port == "anonymous:127.0.0.1"
    assert other_host != one
    assert v6 == "anonymous:[::1]"


def test_stream_quota_refuses_past_its_limit_and_frees_on_release() -> None:
    quota = StreamQuota(2, setting="SOULSPOT_BUS__X", what="open streams")
    quota.acquire("a")
    with quota.hold("a"):
        with pytest.raises(ResourceExhausted) as info:
            quota.acquire("a")
        quota.acquire("b")  # another caller has its own quota
    failure = info.value.detail(error_details_pb2.QuotaFailure)
    assert failure is not None
    assert failure.violations[0].subject == "a"
    assert "SOULSPOT_BUS__X=2" in failure.violations[0].description
    quota.acquire("a")  # the held one was given back
    assert quota.count("a") == 2
