"""One SHA-1 rule for every signature the service verifies — client and intermediate
certificates, delegated OCSP responder certificates, OCSP responses, CRLs: refused as
`weak_signature_algorithm`, naming which object carries it, unless `allow_sha1_signatures`;
then verified with the signer's key like any other. The material is made by the openssl CLI
(cryptography refuses to sign with SHA-1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509 import ocsp

from authz.core.decision import State, decide
from authz.core.issuers import IssuerPolicy
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.revocation import CertStatus, RevocationError, RevocationFailure
from authz.core.trust import TrustBundle
from authz.demo.openssl_ocsp import OpensslCa
from authz.demo.pki import LabPki
from authz.revocation.crl import verify_crl
from authz.revocation.ocsp import build_query, verify_response
from tests.support import envoy_field, xfcc_with_chain


def now() -> dt.datetime:
    """The openssl CLI dates certificates from the moment it makes them."""
    return dt.datetime.now(dt.UTC)


def failure(call: Callable[[], Any]) -> RevocationError:
    with pytest.raises(RevocationError) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def ca(pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> OpensslCa:
    return OpensslCa(tmp_path_factory.mktemp("sha1-ca"), pki.issuing)


def test_a_sha1_delegated_responder_certificate_is_weak_not_unauthorized(
    ca: OpensslCa, pki: LabPki
) -> None:
    """It was issued by the CA: saying otherwise sent operators looking for the wrong fault."""
    client = pki.client("sha1-rule-a")
    ca.add_valid(client)
    signer = ca.issue("SHA1 Responder", md="sha1", usage="OCSPSigning")
    query = build_query(client.cert, pki.issuing.cert)
    der = ca.respond(query.der, signer=signer)
    error = failure(lambda: verify_response(der, query, pki.issuing.cert, now()))
    assert error.failure is RevocationFailure.WEAK_SIGNATURE
    assert "delegated responder certificate CN=SHA1 Responder" in error.detail
    assert "ecdsa-with-SHA1" in error.detail
    allowed = verify_response(der, query, pki.issuing.cert, now(), allow_sha1=True)
    assert allowed.status is CertStatus.GOOD


def test_a_sha1_signed_ocsp_response_is_refused_unless_allowed(ca: OpensslCa, pki: LabPki) -> None:
    client = pki.client("sha1-rule-b")
    ca.add_valid(client)
    query = build_query(client.cert, pki.issuing.cert)
    der = ca.respond(query.der, md="sha1")
    error = failure(lambda: verify_response(der, query, pki.issuing.cert, now()))
    assert error.failure is RevocationFailure.WEAK_SIGNATURE
    assert error.detail == "the OCSP response is signed with SHA-1 (allow_sha1_signatures)"
    assert verify_response(der, query, pki.issuing.cert, now(), allow_sha1=True).status is (
        CertStatus.GOOD
    )
    # A SHA-1 signature that does not verify is a bad signature, whatever the setting.
    signature = ocsp.load_der_ocsp_response(der).signature
    tampered = der.replace(signature, signature[:-1] + bytes([signature[-1] ^ 1]), 1)
    for allow in (False, True):
        with pytest.raises(RevocationError) as info:
            verify_response(tampered, query, pki.issuing.cert, now(), allow_sha1=allow)
        assert info.value.failure is RevocationFailure.BAD_SIGNATURE


def test_a_sha1_crl_that_openssl_verifies_is_weak_not_a_bad_signature(
    ca: OpensslCa, pki: LabPki, tmp_path: Path
) -> None:
    revoked = pki.client("sha1-rule-c")
    ca.add_valid(revoked)
    ca.revoke(revoked)
    data = ca.gencrl(tmp_path / "sha1.crl", md="sha1").read_bytes()
    error = failure(lambda: verify_crl(data, pki.issuing.cert, now()))
    assert error.failure is RevocationFailure.WEAK_SIGNATURE
    assert error.detail == "the CRL is signed with SHA-1 (allow_sha1_signatures)"
    index = verify_crl(data, pki.issuing.cert, now(), allow_sha1=True)
    assert index.status(revoked.cert.serial_number).status is CertStatus.REVOKED
    other = OpensslCa(tmp_path / "other", pki.foreign)  # same name, another key
    forged = other.gencrl(tmp_path / "forged.crl", md="sha1").read_bytes()
    for allow in (False, True):
        with pytest.raises(RevocationError) as info:
            verify_crl(forged, pki.issuing.cert, now(), allow_sha1=allow)
        assert info.value.failure is RevocationFailure.BAD_SIGNATURE


def test_a_sha1_signed_intermediate_is_named_not_issuer_unknown(
    pki: LabPki, tmp_path: Path
) -> None:
    """The bundle holds the root; the client's chain (Envoy's XFCC) brings an intermediate the
    root signed with SHA-1."""
    intermediate = OpensslCa(tmp_path / "root", pki.root).issue(
        "SHA1 Intermediate", md="sha1", ca=True
    )
    client = OpensslCa(tmp_path / "intermediate", intermediate).issue("under-sha1")
    request = CheckInput(
        envoy_field(client.cert), xfcc_with_chain([client.cert, intermediate.cert])
    )
    trust = TrustBundle.from_certificates([pki.root.cert])
    policy = IssuerPolicy.from_dns(["CN=SHA1 Intermediate"])
    refused = decide(request, State(trust, policy), now())
    assert refused.reason is Reason.WEAK_SIGNATURE_ALGORITHM
    assert refused.message.startswith(
        "The intermediate CA certificate CN=SHA1 Intermediate in the client's chain is signed "
        "with ecdsa-with-SHA1 by CN=Lab Root CA,O=Lab"
    )
    assert decide(request, State(trust, policy, allow_sha1=True), now()).allowed
