"""Per-caller quotas: how many streams (and durable consumers) one caller identity may hold.

A caller is counted by its verified identity (the mesh URI of its certificate); a plaintext
caller has none, so it is counted as one anonymous caller per peer host
(`anonymous:127.0.0.1`): a client opening a fresh connection per stream still meets the
same quota. Running out is RESOURCE_EXHAUSTED with a google.rpc.QuotaFailure naming the
setting to raise.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from google.rpc import error_details_pb2

from services.kit.rpc.errors import ResourceExhausted
from services.kit.security.identity import peer_identity

if TYPE_CHECKING:
    from collections.abc import Iterator

    import grpc

ANONYMOUS = "anonymous:"


def _peer_host(peer: str) -> str:
    """The host of a gRPC peer string: ipv4:127.0.0.1:5000 -> 127.0.0.1,
    ipv6:[::1]:5000 -> [::1], unix:/path -> unix:/path."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, _port = rest.rpartition(":")
        return host or rest
    return peer or "unknown"


def quota_key(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Whom a call counts against: its verified identity's URI, else its peer host."""
    identity = peer_identity(context)
    if identity is not None:
        return identity.uri
    return ANONYMOUS + _peer_host(context.peer() or "")


def quota_failure(subject: str, setting: str, limit: int, what: str) -> ResourceExhausted:
    """RESOURCE_EXHAUSTED for `subject` having `limit` of `what`, naming `setting`."""
    description = f"{subject} already has {limit} {what}; the limit is {setting}={limit}"
    return ResourceExhausted(
        description,
        details=[
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=subject, description=description
                    )
                ]
            )
        ],
    )


class StreamQuota:
    """Open streams per caller key, at most `limit` each (`setting` names the limit)."""

    def __init__(self, limit: int, *, setting: str, what: str) -> None:
        self.limit = limit
        self.setting = setting
        self.what = what
        self._open: dict[str, int] = {}

    def count(self, key: str) -> int:
        return self._open.get(key, 0)

    def acquire(self, key: str) -> None:
        """Take one stream for `key`, or raise ResourceExhausted."""
        held = self._open.get(key, 0)
        if held >= self.limit:
            raise quota_failure(key, self.setting, self.limit, self.what)
        self._open[key] = held + 1

    def release(self, key: str) -> None:
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """One stream for `key` while the block runs."""
        self.acquire(key)
        try:
            yield
        finally:
            self.release(key)
