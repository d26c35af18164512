"""OCSP requests and response verification (RFC 6960). Pure: bytes and certificates in, status out.

cryptography parses OCSP responses but does not verify them. Every rule here is checked explicitly,
and anything that is not a proven, fresh answer about exactly the certificate asked for raises
RevocationError. `now` is a parameter so recorded responses from any year can be verified.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, OCSPExtensionOID

from authz.core.names import display, name_key
from authz.core.revocation import (
    CertStatus,
    RevocationError,
    RevocationFailure,
    RevocationStatus,
    check_freshness,
)
from authz.core.trust import issued, signature_algorithm_name, signed_with_sha1, verify_signature

NONCE_BYTES = 32
# Extensions this verifier understands; any other marked critical makes the response unusable.
_KNOWN_EXTENSIONS = frozenset({OCSPExtensionOID.NONCE})


@dataclass(frozen=True, slots=True)
class CertId:
    """RFC 6960 CertID: what a SingleResponse must match, field by field."""

    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int


@dataclass(frozen=True, slots=True)
class OcspQuery:
    """A request ready to send, and what its answer must match."""

    der: bytes
    cert_id: CertId
    nonce: bytes | None


HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}  # noqa: S303 - SHA-1 CertIDs are what RFC 5019/9919 responders expect


ALLOWED_SCHEMES = ("http://", "https://")


def aia_ocsp_urls(cert: x509.Certificate) -> list[str]:
    """http(s) OCSP URLs from the AIA extension, in order; other schemes are ignored."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        d.access_location.value
        for d in aia
        if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and d.access_location.value.lower().startswith(ALLOWED_SCHEMES)
    ]


def build_query(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    hash_name: str = "sha1",
    with_nonce: bool = False,
) -> OcspQuery:
    """The OCSP request for `cert`. `issuer` must already be proven (trust.issued) by the caller."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, HASHES[hash_name])
    nonce = os.urandom(NONCE_BYTES) if with_nonce else None
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    request = builder.build()
    cert_id = CertId(
        request.hash_algorithm.name,
        request.issuer_name_hash,
        request.issuer_key_hash,
        request.serial_number,
    )
    return OcspQuery(request.public_bytes(Encoding.DER), cert_id, nonce)


def build_query_by_hash(cert_id: CertId, serial: int, with_nonce: bool = False) -> OcspQuery:
    """A request for `serial` under the issuer of a known CertID (no certificate needed)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        cert_id.issuer_name_hash, cert_id.issuer_key_hash, serial, HASHES[cert_id.hash_algorithm]
    )
    nonce = os.urandom(NONCE_BYTES) if with_nonce else None
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    request = builder.build()
    asked = CertId(
        cert_id.hash_algorithm, cert_id.issuer_name_hash, cert_id.issuer_key_hash, serial
    )
    return OcspQuery(request.public_bytes(Encoding.DER), asked, nonce)


def verify_response(
    der: bytes,
    query: OcspQuery,
    issuer: x509.Certificate,
    now: dt.datetime,
    *,
    skew: dt.timedelta = dt.timedelta(seconds=300),
    max_age: dt.timedelta = dt.timedelta(seconds=300),
    max_response_age: float = 0.0,
    allow_sha1: bool = False,
) -> RevocationStatus:
    """Verify `der` as the answer to `query` about a certificate issued by `issuer`.

    `max_response_age` (seconds, 0 for none) bounds how old thisUpdate may be even when nextUpdate
    is far off: without a nonce, an on-path attacker can replay an old signed "good" until its
    nextUpdate (`openssl ocsp -status_age` is the same bound). `allow_sha1`: accept SHA-1
    signatures, on the response and on a delegated responder's certificate (verified with the
    signer's key like any other); without it, either is refused as weak_signature_algorithm."""
    response = _parse(der)
    signer = find_signer(response, issuer)
    _check_signer_authorized(signer, issuer, allow_sha1)
    check_signature(response, signer, allow_sha1)
    _check_critical_extensions(response.extensions, "response")
    _check_nonce(response, query.nonce)
    single = _matching_single_response(response, query.cert_id)
    _check_critical_extensions(_single_extensions(response), "single response")
    status = _status(single, now, skew, max_age)
    # After the answer's own window: an answer not valid at `now` says so, not that its
    # delegated signer's certificate (usually issued for the same period) is not valid then.
    _check_signer_valid(signer, issuer, now)
    if max_response_age > 0 and now - status.this_update > skew + dt.timedelta(
        seconds=max_response_age
    ):
        raise RevocationError(
            RevocationFailure.STALE,
            f"thisUpdate {status.this_update} is older than ocsp_max_response_age allows",
        )
    return status


def _parse(der: bytes) -> ocsp.OCSPResponse:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise RevocationError(RevocationFailure.UNPARSABLE, f"not an OCSP response ({e})") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationError(
            RevocationFailure.UNSUCCESSFUL, f"responder said {response.response_status.name}"
        )
    return response


def find_signer(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    """The certificate the ResponderID names, among the issuer and the response's certificates."""
    for candidate in (issuer, *response.certificates):
        if response.responder_key_hash is not None:
            if _key_hash(candidate) == response.responder_key_hash:
                return candidate
        elif response.responder_name is not None and name_key(candidate.subject) == name_key(
            response.responder_name
        ):
            return candidate
    raise RevocationError(
        RevocationFailure.SIGNER_NOT_FOUND, "no certificate matches the responder ID"
    )


def _key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING: RFC 6960's ResponderID byKey."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _check_signer_authorized(
    signer: x509.Certificate, issuer: x509.Certificate, allow_sha1: bool = False
) -> None:
    """The issuer itself, or a delegate it issued for OCSP signing."""
    if signer == issuer:
        return
    if not issued(signer, issuer, sha1=True):
        raise RevocationError(
            RevocationFailure.UNAUTHORIZED_SIGNER,
            "the signing certificate was not issued by the CA",
        )
    try:
        usages = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise RevocationError(
            RevocationFailure.UNAUTHORIZED_SIGNER, "the signing certificate lacks id-kp-OCSPSigning"
        )
    if not allow_sha1 and signed_with_sha1(signer):
        raise RevocationError(
            RevocationFailure.WEAK_SIGNATURE,
            f"the delegated responder certificate {display(signer.subject)} is signed with "
            f"{signature_algorithm_name(signer)} by the CA (allow_sha1_signatures)",
        )


def _check_signer_valid(
    signer: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
) -> None:
    """A delegated signer's certificate must be valid now."""
    if signer != issuer and not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
        raise RevocationError(
            RevocationFailure.UNAUTHORIZED_SIGNER, "the signing certificate is outside its validity"
        )


def check_signature(
    response: ocsp.OCSPResponse, signer: x509.Certificate, allow_sha1: bool = False
) -> None:
    try:
        algorithm = response.signature_hash_algorithm
        verify_signature(
            signer.public_key(), response.signature, response.tbs_response_bytes, algorithm
        )
    except (InvalidSignature, UnsupportedAlgorithm, TypeError, ValueError) as e:
        raise RevocationError(
            RevocationFailure.BAD_SIGNATURE, f"signature does not verify ({e!r})"
        ) from None
    if not allow_sha1 and isinstance(algorithm, hashes.SHA1):
        raise RevocationError(
            RevocationFailure.WEAK_SIGNATURE,
            "the OCSP response is signed with SHA-1 (allow_sha1_signatures)",
        )


def _check_critical_extensions(extensions: x509.Extensions, where: str) -> None:
    for extension in extensions:
        if extension.critical and extension.oid not in _KNOWN_EXTENSIONS:
            raise RevocationError(
                RevocationFailure.CRITICAL_EXTENSION,
                f"unknown critical extension {extension.oid.dotted_string} in the {where}",
            )


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes | None) -> None:
    if nonce is None:
        return
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        raise RevocationError(
            RevocationFailure.NONCE_MISMATCH, "the response does not echo the nonce"
        ) from None
    if echoed != nonce:
        raise RevocationError(
            RevocationFailure.NONCE_MISMATCH, "the response echoes a different nonce"
        )


def _single_extensions(response: ocsp.OCSPResponse) -> x509.Extensions:
    """cryptography exposes singleExtensions only when there is one SingleResponse.

    With several, their critical extensions cannot be checked, so the response is refused. We ask
    about one certificate, and RFC 5019 responders answer with exactly one.
    """
    try:
        return response.single_extensions
    except ValueError:
        raise RevocationError(
            RevocationFailure.UNSUPPORTED, "more than one SingleResponse in the response"
        ) from None


def _matching_single_response(
    response: ocsp.OCSPResponse, wanted: CertId
) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose whole CertID equals the request's (never the serial alone)."""
    for single in response.responses:
        got = CertId(
            single.hash_algorithm.name,
            single.issuer_name_hash,
            single.issuer_key_hash,
            single.serial_number,
        )
        if got == wanted:
            return single
    raise RevocationError(
        RevocationFailure.CERT_ID_MISMATCH, "no answer for the certificate asked about"
    )


def _status(
    single: ocsp.OCSPSingleResponse,
    now: dt.datetime,
    skew: dt.timedelta,
    max_age: dt.timedelta,
) -> RevocationStatus:
    this_update, next_update = single.this_update_utc, single.next_update_utc
    valid_until = check_freshness(this_update, next_update, now, skew, max_age)
    status = CertStatus(single.certificate_status.name.lower())
    reason = single.revocation_reason
    return RevocationStatus(
        status=status,
        this_update=this_update,
        next_update=next_update,
        valid_until=valid_until,
        revocation_time=single.revocation_time_utc,
        revocation_reason=reason.value if reason is not None else None,
    )
