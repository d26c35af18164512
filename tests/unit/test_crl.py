"""CRL verification, one test per rule, with CRLs built here by cryptography."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier

from authz.core.revocation import CertStatus, RevocationError, RevocationFailure
from authz.demo.pki import Identity, LabPki
from authz.revocation.crl import crl_urls, verify_crl

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def build_crl(
    signer: Identity,
    revoked: dict[int, x509.ReasonFlags | None] | None = None,
    *,
    last: dt.datetime | None = None,
    next_: dt.datetime | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    pem: bool = False,
) -> bytes:
    last = last or NOW - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(signer.cert.subject)
        .last_update(last)
        .next_update(next_ or last + dt.timedelta(hours=1))
    )
    for serial, reason in (revoked or {}).items():
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(last - dt.timedelta(hours=1))
        )
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    for extension, critical in extensions or []:
        builder = builder.add_extension(extension, critical=critical)
    crl = builder.sign(signer.key, hashes.SHA256())
    return crl.public_bytes(Encoding.PEM if pem else Encoding.DER)


def failure(data: bytes, issuer: Identity) -> RevocationFailure:
    with pytest.raises(RevocationError) as info:
        verify_crl(data, issuer.cert, NOW)
    return info.value.failure


def test_listed_serial_is_revoked_with_reason_others_good(pki: LabPki) -> None:
    index = verify_crl(
        build_crl(pki.issuing, {77: x509.ReasonFlags.key_compromise, 78: None}),
        pki.issuing.cert,
        NOW,
    )
    revoked = index.status(77)
    assert revoked.status is CertStatus.REVOKED and revoked.revocation_reason == "keyCompromise"
    assert index.status(78).status is CertStatus.REVOKED
    assert index.status(79).status is CertStatus.GOOD


def test_pem_and_der_both_load(pki: LabPki) -> None:
    assert (
        verify_crl(build_crl(pki.issuing, pem=True), pki.issuing.cert, NOW).status(1).status
        is CertStatus.GOOD
    )


def test_signed_by_another_key_with_the_same_name(pki: LabPki) -> None:
    assert failure(build_crl(pki.foreign), pki.issuing) is RevocationFailure.BAD_SIGNATURE


def test_another_issuers_crl(pki: LabPki) -> None:
    assert failure(build_crl(pki.other), pki.issuing) is RevocationFailure.UNAUTHORIZED_SIGNER


def test_stale_and_future(pki: LabPki) -> None:
    stale = build_crl(
        pki.issuing, last=NOW - dt.timedelta(hours=3), next_=NOW - dt.timedelta(hours=1)
    )
    assert failure(stale, pki.issuing) is RevocationFailure.STALE
    future = build_crl(pki.issuing, last=NOW + dt.timedelta(hours=1))
    assert failure(future, pki.issuing) is RevocationFailure.NOT_YET_VALID


def test_delta_and_partitioned_crls_are_refused(pki: LabPki) -> None:
    delta = build_crl(pki.issuing, extensions=[(x509.DeltaCRLIndicator(1), True)])
    assert failure(delta, pki.issuing) is RevocationFailure.UNSUPPORTED
    idp = x509.IssuingDistributionPoint(None, None, True, False, None, False, False)
    partitioned = build_crl(pki.issuing, extensions=[(idp, True)])
    assert failure(partitioned, pki.issuing) is RevocationFailure.UNSUPPORTED


def test_unknown_critical_extension_is_refused(pki: LabPki) -> None:
    unknown = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.9"), b"\x05\x00")
    assert (
        failure(build_crl(pki.issuing, extensions=[(unknown, True)]), pki.issuing)
        is RevocationFailure.CRITICAL_EXTENSION
    )
    assert verify_crl(build_crl(pki.issuing, extensions=[(unknown, False)]), pki.issuing.cert, NOW)


def test_garbage(pki: LabPki) -> None:
    assert failure(b"not a crl", pki.issuing) is RevocationFailure.UNPARSABLE


def test_distribution_points(pki: LabPki) -> None:
    assert crl_urls(pki.client("cdp", crl_url="http://crl.lab/issuing.crl").cert) == [
        "http://crl.lab/issuing.crl"
    ]
    assert crl_urls(pki.client("ldap", crl_url="ldap://crl.lab/x").cert) == []
    assert crl_urls(pki.client("none").cert) == []
