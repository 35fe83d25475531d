"""Transport security for every server and channel of the mesh: mutual TLS with the mesh CA.

A process finds its credentials in the PKI folder (`SOULSPOT_TLS__PKI_DIR`, by default
`<state dir>/pki`) under its own identity. Plaintext is possible only when asked for
explicitly (`SOULSPOT_TLS__PLAINTEXT=true`), and a process then says so once at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from pydantic import BaseModel, ConfigDict

from services.kit.security.ca import IdentityFiles, identity_files

if TYPE_CHECKING:
    from services.kit.security.identity import Identity

_log = logging.getLogger(__name__)
PKI_SUBDIR = "pki"


class TlsSection(BaseModel):
    """`SOULSPOT_TLS__*`: where the mesh's certificates are, or that there are none."""

    model_config = ConfigDict(extra="ignore")

    # Plaintext everywhere: every caller is then anonymous and every identity check refuses.
    plaintext: bool = False
    # The PKI folder; empty means `<state dir>/pki`.
    pki_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class Transport:
    """How one process talks: plaintext, or mutual TLS as `identity` with `files`."""

    identity: Identity
    files: IdentityFiles | None

    @property
    def secure(self) -> bool:
        return self.files is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """Credentials that require and verify a client certificate, or None (plaintext)."""
        if self.files is None:
            return None
        ca, cert, key = self.files.read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials that present this identity and verify the server, or None."""
        if self.files is None:
            return None
        ca, cert, key = self.files.read()
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )


_warned_plaintext = False
# The transport of this process, set once by its entry point; None (a library use, a test)
# means plaintext unless a server or channel is given a transport of its own.
_current: Transport | None = None


def use_transport(transport: Transport | None) -> Transport | None:
    """Make `transport` this process's default for servers and channels; returns the old one."""
    global _current
    previous, _current = _current, transport
    return previous


def current_transport() -> Transport | None:
    return _current


def transport_for(identity: Identity, section: TlsSection, state_dir: Path) -> Transport:
    """The transport of the process that is `identity`, checked before any port opens."""
    global _warned_plaintext
    if section.plaintext:
        if not _warned_plaintext:
            _warned_plaintext = True
            _log.warning(
                "plaintext transport: callers are not authenticated",
                extra={
                    "module_name": identity.name,
                    "operation": "start",
                    "status": "insecure",
                    "impact": "the router takes every caller at its word: any process that "
                    "reaches a port may register, publish or replay as anyone",
                    "action": "unset SOULSPOT_TLS__PLAINTEXT to use mutual TLS",
                },
            )
        return Transport(identity, None)
    pki_dir = section.pki_dir or state_dir / PKI_SUBDIR
    files = identity_files(pki_dir, identity)
    missing = [p for p in (files.ca, files.cert, files.key) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no credentials for {identity.uri}: {', '.join(str(p) for p in missing)} missing; "
            "`soulspot up` (or `python -m services.kit.security init`) creates them, "
            "or set SOULSPOT_TLS__PLAINTEXT=true to run without TLS"
        )
    return Transport(identity, files)
