"""One test per verification rule, on responses built here with cryptography's OCSPResponseBuilder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ObjectIdentifier

from authz.core.revocation import CertStatus, RevocationError, RevocationFailure
from authz.demo.pki import Identity, LabPki, make_ca, make_leaf, make_ocsp_signer
from authz.revocation.ocsp import (
    OcspQuery,
    build_query,
    check_signature,
    find_signer,
    verify_response,
)
from tests.ocsp_responder import CertIdFields, build_response, unsuccessful

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SKEW = dt.timedelta(seconds=300)
MAX_AGE = dt.timedelta(seconds=300)


@pytest.fixture(scope="module")
def leaf(pki: LabPki) -> Identity:
    return pki.client("ocsp-leaf")


@pytest.fixture(scope="module")
def query(leaf: Identity, pki: LabPki) -> OcspQuery:
    return build_query(leaf.cert, pki.issuing.cert)


def verify(der: bytes, query: OcspQuery, pki: LabPki, now: dt.datetime = NOW) -> object:
    return verify_response(der, query, pki.issuing.cert, now, skew=SKEW, max_age=MAX_AGE)


def failure(der: bytes, query: OcspQuery, pki: LabPki, now: dt.datetime = NOW) -> RevocationFailure:
    with pytest.raises(RevocationError) as info:
        verify(der, query, pki, now)
    return info.value.failure


# -- statuses -------------------------------------------------------------------------------------


def test_good_signed_by_the_issuer(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    der = build_response((leaf.cert, pki.issuing.cert), pki.issuing, this_update=NOW)
    status = verify(der, query, pki)
    assert status.status is CertStatus.GOOD  # type: ignore[attr-defined]
    assert status.valid_until == NOW + dt.timedelta(hours=1)  # type: ignore[attr-defined]


def test_revoked_carries_time_and_reason(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    revoked_at = NOW - dt.timedelta(days=2)
    der = build_response(
        (leaf.cert, pki.issuing.cert),
        pki.issuing,
        status=CertStatus.REVOKED,
        revocation_time=revoked_at,
        revocation_reason=x509.ReasonFlags.key_compromise,
    )
    status = verify(der, query, pki)
    assert status.status is CertStatus.REVOKED  # type: ignore[attr-defined]
    assert status.revocation_time == revoked_at  # type: ignore[attr-defined]
    assert status.revocation_reason == "keyCompromise"  # type: ignore[attr-defined]


def test_unknown(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    der = build_response((leaf.cert, pki.issuing.cert), pki.issuing, status=CertStatus.UNKNOWN)
    assert verify(der, query, pki).status is CertStatus.UNKNOWN  # type: ignore[attr-defined]


# -- response status and parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.INTERNAL_ERROR,
        ocsp.OCSPResponseStatus.TRY_LATER,
        ocsp.OCSPResponseStatus.SIG_REQUIRED,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    ],
)
def test_every_unsuccessful_status_fails(
    status: ocsp.OCSPResponseStatus, pki: LabPki, query: OcspQuery
) -> None:
    assert failure(unsuccessful(status), query, pki) is RevocationFailure.UNSUCCESSFUL


@pytest.mark.parametrize("der", [b"", b"garbage", b"\x30\x03\x02\x01\x00", b"\x30" * 1000])
def test_garbage_bytes_are_unparsable(der: bytes, pki: LabPki, query: OcspQuery) -> None:
    assert failure(der, query, pki) is RevocationFailure.UNPARSABLE


# -- who signed -----------------------------------------------------------------------------------


def test_delegated_signer_with_ocsp_signing_eku(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    delegate = make_ocsp_signer(pki.issuing)
    der = build_response((leaf.cert, pki.issuing.cert), delegate)
    assert verify(der, query, pki).status is CertStatus.GOOD  # type: ignore[attr-defined]


def test_delegated_signer_without_the_eku_is_unauthorized(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    delegate = make_ocsp_signer(pki.issuing, with_eku=False)
    der = build_response((leaf.cert, pki.issuing.cert), delegate)
    assert failure(der, query, pki) is RevocationFailure.UNAUTHORIZED_SIGNER


def test_delegated_signer_from_another_ca_is_unauthorized(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    # A genuine OCSP signer, with the EKU, but issued by a sibling CA under the same root.
    delegate = make_ocsp_signer(pki.other)
    der = build_response((leaf.cert, pki.issuing.cert), delegate)
    assert failure(der, query, pki) is RevocationFailure.UNAUTHORIZED_SIGNER


def test_delegated_signer_from_a_ca_copying_the_issuer_dn_is_unauthorized(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    delegate = make_ocsp_signer(pki.foreign)
    der = build_response((leaf.cert, pki.issuing.cert), delegate)
    assert failure(der, query, pki) is RevocationFailure.UNAUTHORIZED_SIGNER


def test_expired_delegated_signer_is_unauthorized(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    delegate = make_ocsp_signer(pki.issuing)
    der = build_response((leaf.cert, pki.issuing.cert), delegate)
    after_expiry = delegate.cert.not_valid_after_utc + dt.timedelta(days=1)
    # The response itself is still fresh at that time; only the signer has expired.
    fresh = build_response(
        (leaf.cert, pki.issuing.cert), delegate, this_update=after_expiry - dt.timedelta(minutes=1)
    )
    assert failure(fresh, query, pki, now=after_expiry) is RevocationFailure.UNAUTHORIZED_SIGNER
    assert verify(der, query, pki).status is CertStatus.GOOD  # type: ignore[attr-defined]


def test_signature_by_a_different_key_fails(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    # The foreign CA has the issuer's exact DN but its own key; naming the responder by name
    # points at the real issuer, whose key then does not verify the signature.
    der = build_response(
        (leaf.cert, pki.issuing.cert), pki.foreign, by_key=False, include_signer=False
    )
    assert failure(der, query, pki) is RevocationFailure.BAD_SIGNATURE


def test_tampered_response_fails(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    der = build_response((leaf.cert, pki.issuing.cert), pki.issuing, include_signer=False)
    tampered = der.replace(leaf.cert.serial_number.to_bytes(20, "big")[-8:], b"\x00" * 8)
    assert tampered != der
    assert failure(tampered, query, pki) is RevocationFailure.BAD_SIGNATURE


def test_signer_named_by_a_key_hash_nobody_has(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    delegate = make_ocsp_signer(pki.issuing)
    der = build_response((leaf.cert, pki.issuing.cert), delegate, include_signer=False)
    assert failure(der, query, pki) is RevocationFailure.SIGNER_NOT_FOUND


def test_signer_found_by_name(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    der = build_response((leaf.cert, pki.issuing.cert), pki.issuing, by_key=False)
    assert verify(der, query, pki).status is CertStatus.GOOD  # type: ignore[attr-defined]
    delegate = make_ocsp_signer(pki.issuing)
    der = build_response((leaf.cert, pki.issuing.cert), delegate, by_key=False)
    assert verify(der, query, pki).status is CertStatus.GOOD  # type: ignore[attr-defined]


def test_rsa_issuer_signature(pki: LabPki) -> None:
    rsa_ca = make_ca("CN=RSA CA,O=Lab", pki.root, key=rsa.generate_private_key(65537, 2048))
    rsa_leaf = make_leaf("rsa-client", rsa_ca)
    rsa_query = build_query(rsa_leaf.cert, rsa_ca.cert)
    der = build_response((rsa_leaf.cert, rsa_ca.cert), rsa_ca)
    status = verify_response(der, rsa_query, rsa_ca.cert, NOW)
    assert status.status is CertStatus.GOOD


# -- CertID ---------------------------------------------------------------------------------------


def cert_id_variants(query: OcspQuery) -> dict[str, CertIdFields]:
    cid = query.cert_id
    base = CertIdFields(cid.issuer_name_hash, cid.issuer_key_hash, cid.serial_number, "sha1")
    flip = bytes([cid.issuer_name_hash[0] ^ 1]) + cid.issuer_name_hash[1:]
    flip_key = bytes([cid.issuer_key_hash[0] ^ 1]) + cid.issuer_key_hash[1:]
    return {
        "exact": base,
        "name_hash": CertIdFields(flip, cid.issuer_key_hash, cid.serial_number),
        "key_hash": CertIdFields(cid.issuer_name_hash, flip_key, cid.serial_number),
        "serial": CertIdFields(cid.issuer_name_hash, cid.issuer_key_hash, cid.serial_number + 1),
    }


@pytest.mark.parametrize("field", ["name_hash", "key_hash", "serial"])
def test_cert_id_mismatch_on_each_field(field: str, pki: LabPki, query: OcspQuery) -> None:
    variants = cert_id_variants(query)
    assert verify(build_response(variants["exact"], pki.issuing), query, pki)
    der = build_response(variants[field], pki.issuing)
    assert failure(der, query, pki) is RevocationFailure.CERT_ID_MISMATCH


def test_cert_id_hash_algorithm_must_match(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    der = build_response((leaf.cert, pki.issuing.cert), pki.issuing, hash_name="sha256")
    assert failure(der, query, pki) is RevocationFailure.CERT_ID_MISMATCH


def test_sha256_cert_id_when_asked(leaf: Identity, pki: LabPki) -> None:
    sha256_query = build_query(leaf.cert, pki.issuing.cert, "sha256")
    der = build_response((leaf.cert, pki.issuing.cert), pki.issuing, hash_name="sha256")
    assert verify(der, sha256_query, pki).status is CertStatus.GOOD  # type: ignore[attr-defined]


def test_answer_about_a_certificate_with_the_same_serial_from_another_ca(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    same_serial = make_leaf("twin", pki.other, serial=leaf.cert.serial_number)
    der = build_response((same_serial.cert, pki.other.cert), pki.issuing)
    assert failure(der, query, pki) is RevocationFailure.CERT_ID_MISMATCH


# -- time -----------------------------------------------------------------------------------------


def respond_at(
    leaf: Identity, pki: LabPki, this_update: dt.datetime, next_update: dt.datetime | bool | None
) -> bytes:
    return build_response(
        (leaf.cert, pki.issuing.cert), pki.issuing, this_update=this_update, next_update=next_update
    )


def test_stale_after_next_update_plus_skew(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    next_update = NOW - SKEW - dt.timedelta(seconds=1)
    der = respond_at(leaf, pki, next_update - dt.timedelta(hours=1), next_update)
    assert failure(der, query, pki) is RevocationFailure.STALE


def test_within_skew_after_next_update_is_accepted(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    next_update = NOW - SKEW + dt.timedelta(seconds=5)
    der = respond_at(leaf, pki, next_update - dt.timedelta(hours=1), next_update)
    assert verify(der, query, pki)


def test_this_update_in_the_future_beyond_skew(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    der = respond_at(leaf, pki, NOW + SKEW + dt.timedelta(seconds=5), True)
    assert failure(der, query, pki) is RevocationFailure.NOT_YET_VALID
    assert verify(respond_at(leaf, pki, NOW + SKEW - dt.timedelta(seconds=5), True), query, pki)


def test_next_update_before_this_update(leaf: Identity, pki: LabPki, query: OcspQuery) -> None:
    der = respond_at(leaf, pki, NOW - dt.timedelta(minutes=1), NOW - dt.timedelta(minutes=2))
    assert failure(der, query, pki) is RevocationFailure.BAD_VALIDITY


def test_missing_next_update_is_valid_for_max_age_only(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    recent = verify(respond_at(leaf, pki, NOW - dt.timedelta(seconds=10), None), query, pki)
    assert recent.valid_until == NOW - dt.timedelta(seconds=10) + MAX_AGE  # type: ignore[attr-defined]
    old = respond_at(leaf, pki, NOW - MAX_AGE - SKEW - dt.timedelta(seconds=1), None)
    assert failure(old, query, pki) is RevocationFailure.STALE


# -- nonce and extensions -------------------------------------------------------------------------


def test_nonce_echoed(leaf: Identity, pki: LabPki) -> None:
    nonce_query = build_query(leaf.cert, pki.issuing.cert, with_nonce=True)
    assert nonce_query.nonce is not None
    der = build_response((leaf.cert, pki.issuing.cert), pki.issuing, nonce=nonce_query.nonce)
    assert verify(der, nonce_query, pki)


def test_nonce_missing_or_different(leaf: Identity, pki: LabPki) -> None:
    nonce_query = build_query(leaf.cert, pki.issuing.cert, with_nonce=True)
    missing = build_response((leaf.cert, pki.issuing.cert), pki.issuing)
    assert failure(missing, nonce_query, pki) is RevocationFailure.NONCE_MISMATCH
    other = build_response((leaf.cert, pki.issuing.cert), pki.issuing, nonce=b"x" * 32)
    assert failure(other, nonce_query, pki) is RevocationFailure.NONCE_MISMATCH


def test_unknown_critical_extension_is_rejected(
    leaf: Identity, pki: LabPki, query: OcspQuery
) -> None:
    unknown = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    critical = build_response(
        (leaf.cert, pki.issuing.cert), pki.issuing, extensions=[(unknown, True)]
    )
    assert failure(critical, query, pki) is RevocationFailure.CRITICAL_EXTENSION
    harmless = build_response(
        (leaf.cert, pki.issuing.cert), pki.issuing, extensions=[(unknown, False)]
    )
    assert verify(harmless, query, pki)


# -- real-world responses (cryptography-vectors) --------------------------------------------------

VECTORS = Path(cryptography_vectors.__file__).parent / "x509" / "ocsp"
REAL_RESPONSES = sorted([*VECTORS.glob("resp-*.der"), VECTORS / "ocsp-army.deps.mil-resp.der"])
# Responses that carry their (genuine) delegated signer: signed correctly, but not by our CA.
DELEGATED = {
    "resp-delegate-unknown-cert.der",
    "resp-revoked-reason.der",
    "resp-sct-extension.der",
    "ocsp-army.deps.mil-resp.der",
}


def test_real_world_vectors_are_present() -> None:
    assert len(REAL_RESPONSES) > 15
    assert {p.name for p in REAL_RESPONSES} >= DELEGATED


@pytest.mark.parametrize("path", REAL_RESPONSES, ids=lambda p: p.name)
def test_real_world_response_is_never_accepted_for_another_issuer(
    path: Path, pki: LabPki, query: OcspQuery
) -> None:
    with pytest.raises(RevocationError) as info:
        verify(path.read_bytes(), query, pki)
    if path.name in DELEGATED:
        assert info.value.failure is RevocationFailure.UNAUTHORIZED_SIGNER


@pytest.mark.parametrize("name", sorted(DELEGATED))
def test_real_world_delegated_signatures_verify(name: str) -> None:
    """Our signature check agrees with real responders' RSA signatures (positive control)."""
    response = ocsp.load_der_ocsp_response((VECTORS / name).read_bytes())
    (signer,) = response.certificates
    assert find_signer(response, signer) == signer
    check_signature(response, signer)


def test_max_response_age_bounds_an_old_answer_with_a_far_next_update(
    leaf: Identity, query: OcspQuery, pki: LabPki
) -> None:
    """Off by default (like `openssl ocsp -status_age`): a replayed old "good" is accepted until
    its nextUpdate unless the operator bounds thisUpdate's age."""
    old = build_response(
        (leaf.cert, pki.issuing.cert), pki.issuing,
        this_update=NOW - dt.timedelta(days=2), next_update=NOW + dt.timedelta(days=5),
    )  # fmt: skip
    assert verify_response(old, query, pki.issuing.cert, NOW).status is CertStatus.GOOD
    with pytest.raises(RevocationError) as refused:
        verify_response(old, query, pki.issuing.cert, NOW, max_response_age=86400)
    assert refused.value.failure is RevocationFailure.STALE
    fresh = verify_response(old, query, pki.issuing.cert, NOW, max_response_age=3 * 86400)
    assert fresh.status is CertStatus.GOOD
