"""Who a process of the mesh is: a SPIFFE-style URI naming its kind and name.

`spiffe://soulspot/module/library` is the library module, `spiffe://soulspot/router/router`
the router, `spiffe://soulspot/client/cli` the command line, `spiffe://soulspot/nats/nats` the
nats-server nodes that hold the event log when it lives in JetStream. The mesh CA writes the
URI into each certificate's subject alternative names; a server reads it back from the
verified peer certificate of a call, never from anything the caller fills in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import grpc

TRUST_DOMAIN = "soulspot"
# The auth property grpc's TLS layer fills from the verified peer certificate's SANs.
SAN_PROPERTY = "x509_subject_alternative_name"
# Names follow the module names of the mesh: lower case, digits, '-' and '_'.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_URI = re.compile(rf"^spiffe://{TRUST_DOMAIN}/(?P<kind>[a-z]+)/(?P<name>[^/]+)$")


class Kind(StrEnum):
    """What a process is to the mesh."""

    MODULE = "module"
    ROUTER = "router"
    CLIENT = "client"
    # The nodes of one NATS cluster share one identity: nats-server accepts a single user on
    # its cluster routes, and each node holds all of the cluster's data anyway.
    NATS = "nats"


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller or a process's own identity."""

    kind: Kind
    name: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"identity name {self.name!r}: lower-case letters, digits, '-' and '_' only, "
                "at most 63 characters"
            )

    @property
    def uri(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/{self.kind}/{self.name}"

    @property
    def file_stem(self) -> str:
        """The stem of this identity's certificate and key files in a PKI folder."""
        return f"{self.kind}-{self.name}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> Identity | None:
        """The identity a URI names, or None when it is not one of this trust domain."""
        match = _URI.match(uri)
        if match is None:
            return None
        try:
            return cls(Kind(match["kind"]), match["name"])
        except ValueError:
            return None

    @classmethod
    def module(cls, name: str) -> Identity:
        return cls(Kind.MODULE, name)

    @classmethod
    def client(cls, name: str) -> Identity:
        return cls(Kind.CLIENT, name)

    @classmethod
    def nats(cls, name: str) -> Identity:
        return cls(Kind.NATS, name)


ROUTER = Identity(Kind.ROUTER, "router")
CLI = Identity(Kind.CLIENT, "cli")


def identity_from_auth_context(auth: Mapping[str, Iterable[bytes]] | None) -> Identity | None:
    """The mesh identity among a verified certificate's SANs, or None (plaintext, no client
    certificate, or a certificate naming no identity of this trust domain)."""
    if not auth:
        return None
    found: Identity | None = None
    for raw in auth.get(SAN_PROPERTY, ()):
        value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        identity = Identity.parse(value)
        if identity is None:
            continue
        if found is not None and found != identity:
            # A certificate naming two identities names none: refuse to guess.
            return None
        found = identity
    return found


def peer_identity(context: grpc.aio.ServicerContext[object, object]) -> Identity | None:
    """The verified identity of the caller of this call, or None."""
    return identity_from_auth_context(context.auth_context())
