"""The mesh CA: one key pair that signs a certificate for every process of the mesh.

A PKI folder (by default `<state dir>/pki`) holds `ca.crt`, `ca.key` and one
`<kind>-<name>.crt` / `.key` pair per identity. `ensure_identities` creates what is missing
and renews what is about to expire, so `soulspot up` and the compose stack's init service can
call it at every start. Keys are ECDSA P-256 (fast handshakes, supported by every gRPC
runtime) and written with mode 0600 in a folder of mode 0700; certificates carry the
identity's SPIFFE URI plus the DNS names and loopback addresses a client dials, so TLS host
checks pass for `127.0.0.1:PORT`, `localhost:PORT` and a compose service name alike.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.kit.security.identity import TRUST_DOMAIN, Identity

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_DAYS = 3650
LEAF_DAYS = 365
# A certificate this close to its end is issued again at the next start.
RENEW_BEFORE = dt.timedelta(days=30)
# Names every server certificate answers to, beside the identity's own name.
LOOPBACK_DNS = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    """Where one identity's credentials are, with the CA that verifies its peers."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert chain, key) as PEM bytes."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


def identity_files(pki_dir: Path, identity: Identity) -> IdentityFiles:
    return IdentityFiles(
        ca=pki_dir / CA_CERT,
        cert=pki_dir / f"{identity.file_stem}.crt",
        key=pki_dir / f"{identity.file_stem}.key",
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: never readable by others, not even for an instant.
    fd = os.open(
        path.with_suffix(path.suffix + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
    )
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(path.with_suffix(path.suffix + ".tmp"), path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class MeshCA:
    """The CA of one mesh, loaded from (or created in) a PKI folder."""

    def __init__(self, pki_dir: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.pki_dir = pki_dir
        self.cert = cert
        self._key = key

    @classmethod
    def load_or_create(cls, pki_dir: Path) -> MeshCA:
        pki_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(pki_dir, 0o700)
        cert_path, key_path = pki_dir / CA_CERT, pki_dir / CA_KEY
        if cert_path.is_file() and key_path.is_file():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC private key")
            if cert.not_valid_after_utc - _now() > RENEW_BEFORE:
                return cls(pki_dir, cert, key)
        return cls._create(pki_dir)

    @classmethod
    def _create(cls, pki_dir: Path) -> MeshCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{TRUST_DOMAIN} mesh CA"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(pki_dir / CA_KEY, _key_pem(key))
        _write_public(pki_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        return cls(pki_dir, cert, key)

    def issue(
        self,
        identity: Identity,
        *,
        dns_names: Iterable[str] = (),
        days: int = LEAF_DAYS,
    ) -> IdentityFiles:
        """Sign a new certificate for `identity` and write its files (replacing old ones)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        dns = list(dict.fromkeys([identity.name, *LOOPBACK_DNS, *dns_names]))
        san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        san += [x509.DNSName(d) for d in dns]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOOPBACK_IPS]
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
                        x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )
        files = identity_files(self.pki_dir, identity)
        _write_private(files.key, _key_pem(key))
        _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
        return files

    def is_current(self, files: IdentityFiles, identity: Identity) -> bool:
        """Whether `files` hold a certificate of this CA for `identity` that is not expiring."""
        if not (files.cert.is_file() and files.key.is_file()):
            return False
        try:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        except ValueError:
            return False
        if cert.issuer != self.cert.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        return uris == [identity.uri]


def ensure_identities(
    pki_dir: Path,
    identities: Sequence[Identity],
    *,
    dns_names: Iterable[str] = (),
) -> dict[Identity, IdentityFiles]:
    """Create the CA and every identity's certificate that is missing, foreign or expiring."""
    ca = MeshCA.load_or_create(pki_dir)
    extra = tuple(dns_names)
    out: dict[Identity, IdentityFiles] = {}
    for identity in identities:
        files = identity_files(pki_dir, identity)
        out[identity] = (
            files if ca.is_current(files, identity) else ca.issue(identity, dns_names=extra)
        )
    return out
