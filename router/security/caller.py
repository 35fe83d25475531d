"""The effective caller of a router call, and the authorization checks made on it.

With mutual TLS (the router's server is secure) the caller is the identity of its verified
certificate, and a call without one is UNAUTHENTICATED. When the router runs plaintext (asked
for explicitly, and said once at start by services/kit/security/tls.py) it takes callers at
their word: the caller is then None, meaning "not authenticated, not checked", and the
servicers keep what the request claims (module name, source_module) as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.kit.rpc.errors import PermissionDenied, Unauthenticated, bad_request
from services.kit.security.identity import ROUTER, Identity, peer_identity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import grpc

    from router.security.policy import Policy


class Callers:
    """Who is calling (`identify`) and what the policy lets them do."""

    def __init__(self, policy: Policy, *, secure: Callable[[], bool]) -> None:
        self.policy = policy
        # Asked per call: the server knows whether its port speaks TLS only once started.
        self._secure = secure

    @property
    def secure(self) -> bool:
        return self._secure()

    def identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
        """The verified caller; None when the router runs plaintext. A secure call without a
        mesh identity raises Unauthenticated."""
        if not self._secure():
            return None
        identity = peer_identity(context)
        if identity is None:
            raise Unauthenticated(
                "the caller's certificate names no spiffe://soulspot/<kind>/<name> identity"
            )
        return identity

    # -- decisions (a None caller is a plaintext one: taken at its word) --------------------

    def check_registration(
        self, caller: Identity | None, name: str, capabilities: Iterable[tuple[str, int]]
    ) -> None:
        if caller is None:
            return
        problems = self.policy.registration_problems(caller, name, capabilities)
        if problems:
            raise PermissionDenied(
                f"{caller.uri} may not register as {name!r}: " + "; ".join(problems.values()),
                details=[bad_request(problems)],
            )

    def may_publish(self, caller: Identity | None, event_type: str) -> bool:
        # The router's own events (pipeline, status) go through as the router.
        return caller is None or caller == ROUTER or self.policy.may_publish(caller, event_type)

    @staticmethod
    def publish_denied(caller: Identity, event_type: str) -> PermissionDenied:
        return PermissionDenied(
            f"{caller.uri} may not publish {event_type!r}: the event's contract does not name "
            "it as a producer and the router's policy grants it no more",
            details=[
                bad_request({"event.event_type": f"{event_type!r} is not publishable by {caller}"})
            ],
        )

    def require_admin(self, caller: Identity | None, operation: str) -> None:
        """Admin operations: the policy's admins, and the router itself (its dashboard)."""
        if caller is None or caller == ROUTER or self.policy.is_admin(caller):
            return
        raise PermissionDenied(f"{operation} is an admin operation; {caller.uri} is no admin")

    def check_discovery(self, caller: Identity | None) -> None:
        """xDS: the policy's identity kinds (every mesh kind by default) may read the routes."""
        if caller is None or self.policy.may_discover(caller):
            return
        raise PermissionDenied(
            f"{caller.uri} may not read the routes over xDS: the policy's discovery kinds do "
            "not include " + caller.kind.value
        )

    def check_playlist_watcher(self, caller: Identity | None, operation: str) -> None:
        """Playlist watches: the policy's watcher kinds (clients by default), its admins and
        the router itself; never a module by default."""
        if caller is None or caller == ROUTER or self.policy.may_watch_playlists(caller):
            return
        raise PermissionDenied(
            f"{operation} is for clients and admins; {caller.uri} is neither (the policy's "
            "playlist_watchers kinds do not include " + caller.kind.value + ")"
        )


def source_name(caller: Identity) -> str:
    """What the router writes as an event's source_module for this caller: a module's name,
    "router", or a client's name ("cli")."""
    return caller.name
