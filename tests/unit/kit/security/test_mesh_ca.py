"""The mesh CA: certificates that name their identity, private keys kept private, renewal."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from services.kit.security.__main__ import main as security_main
from services.kit.security.ca import MeshCA, ensure_identities, identity_files
from services.kit.security.identity import CLI, ROUTER, Identity, identity_from_auth_context

if TYPE_CHECKING:
    from pathlib import Path

LIBRARY = Identity.module("library")


def _sans(path: Path) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_certificates_name_their_identity_and_the_addresses_clients_dial(tmp_path: Path) -> None:
    files = ensure_identities(tmp_path, [ROUTER, LIBRARY], dns_names=["router.mesh"])
    sans = _sans(files[LIBRARY].cert)
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://soulspot/module/library"
    ]
    assert {"library", "localhost", "router.mesh"} <= set(sans.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    x509.load_pem_x509_certificate(files[LIBRARY].cert.read_bytes()).verify_directly_issued_by(ca)


def test_private_keys_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    files = ensure_identities(pki, [CLI])
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    for key in (pki / "ca.key", files[CLI].key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_current_certificates_are_kept_and_foreign_or_expiring_ones_replaced(
    tmp_path: Path,
) -> None:
    first = ensure_identities(tmp_path, [ROUTER, LIBRARY])
    kept = first[ROUTER].cert.read_bytes()
    assert ensure_identities(tmp_path, [ROUTER])[ROUTER].cert.read_bytes() == kept

    # A certificate about to expire is issued again.
    MeshCA.load_or_create(tmp_path).issue(LIBRARY, days=1)
    short = first[LIBRARY].cert.read_bytes()
    assert ensure_identities(tmp_path, [LIBRARY])[LIBRARY].cert.read_bytes() != short

    # A certificate another CA signed under this name is not trusted, and replaced.
    other = tmp_path / "other"
    foreign = ensure_identities(other, [ROUTER])[ROUTER]
    identity_files(tmp_path, ROUTER).cert.write_bytes(foreign.cert.read_bytes())
    renewed = ensure_identities(tmp_path, [ROUTER])[ROUTER].cert.read_bytes()
    assert renewed not in (kept, foreign.cert.read_bytes())


def test_init_command_issues_the_shipped_mesh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert security_main(["init", "--pki-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for uri in (ROUTER.uri, CLI.uri, "spiffe://soulspot/module/soulseek"):
        assert uri in out
    assert (tmp_path / "module-notifications.crt").is_file()


@pytest.mark.parametrize(
    ("sans", "expected"),
    [
        ([b"spiffe://soulspot/module/library", b"localhost"], LIBRARY),
        ([b"spiffe://elsewhere/module/library"], None),
        ([b"spiffe://soulspot/admin/root"], None),  # not a kind of this mesh
        ([b"spiffe://soulspot/module/Library!"], None),
        ([b"spiffe://soulspot/module/library", b"spiffe://soulspot/client/cli"], None),
        ([], None),
    ],
)
def test_identity_comes_from_exactly_one_uri_of_the_trust_domain(
    sans: list[bytes], expected: Identity | None
) -> None:
    assert identity_from_auth_context({"x509_subject_alternative_name": sans}) == expected


def test_identity_names_are_bounded() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        Identity.module("../etc")
    with pytest.raises(ValueError, match="63"):
        Identity.module("a" * 64)
