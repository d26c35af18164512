"""CRLs (RFC 5280 §5) as a revocation source: verification into a compact index. Pure.

A CRL is accepted only if the issuer signed it (signature verified with the issuer's key, issuer
name equal), it is fresh (thisUpdate ≤ now + skew, now ≤ nextUpdate + skew), and it is a complete
CRL for all reasons: delta CRLs, indirect CRLs and CRLs limited by an Issuing Distribution Point
are refused rather than misread, as is any unknown critical extension.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from authz.core.names import name_key
from authz.core.revocation import RevocationError, RevocationFailure, check_freshness
from authz.core.trust import verify_signature
from authz.revocation.crl_index import REASONS, CrlIndex, RevokedSerials, micros

REASON_CODES = {reason: code for code, reason in enumerate(REASONS)}

# Extensions a complete CRL may carry and we understand.
_KNOWN_CRL_EXTENSIONS = frozenset(
    {
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    }
)
_KNOWN_ENTRY_EXTENSIONS = frozenset(
    {CRLEntryExtensionOID.CRL_REASON, CRLEntryExtensionOID.INVALIDITY_DATE}
)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise RevocationError(RevocationFailure.UNPARSABLE, f"not a CRL ({e})") from None


def verify_crl(
    data: bytes,
    issuer: x509.Certificate,
    now: dt.datetime,
    *,
    skew: dt.timedelta = dt.timedelta(seconds=300),
    max_age: dt.timedelta = dt.timedelta(hours=24),
    allow_sha1: bool = False,
) -> CrlIndex:
    """Verify `data` as `issuer`'s complete CRL and index it; raises RevocationError. A SHA-1
    signature is verified like any other, then refused as weak_signature_algorithm unless
    `allow_sha1` (cryptography's own check refuses SHA-1 without saying so)."""
    crl = load_crl(data)
    if name_key(crl.issuer) != name_key(issuer.subject):
        raise RevocationError(RevocationFailure.UNAUTHORIZED_SIGNER, "the CRL is not this issuer's")
    _check_signature(crl, issuer, allow_sha1)
    _check_extensions(crl)
    this_update, next_update = crl.last_update_utc, crl.next_update_utc
    valid_until = check_freshness(this_update, next_update, now, skew, max_age)
    revoked = RevokedSerials.build(_entries(crl))
    return CrlIndex(revoked, this_update, next_update, valid_until)


def _entries(crl: x509.CertificateRevocationList) -> Iterator[tuple[int, int, int]]:
    """(serial, revocation time in µs, reason code) of every entry; an unknown critical entry
    extension refuses the whole CRL."""
    for entry in crl:
        code = 0
        for extension in entry.extensions:
            if extension.critical and extension.oid not in _KNOWN_ENTRY_EXTENSIONS:
                raise RevocationError(
                    RevocationFailure.CRITICAL_EXTENSION,
                    f"unknown critical entry extension {extension.oid.dotted_string}",
                )
            if isinstance(extension.value, x509.CRLReason):
                code = REASON_CODES[extension.value.reason.value]
        yield entry.serial_number, micros(entry.revocation_date_utc), code


def _check_signature(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, allow_sha1: bool
) -> None:
    try:
        algorithm = crl.signature_hash_algorithm
        if isinstance(algorithm, hashes.SHA1):
            verify_signature(issuer.public_key(), crl.signature, crl.tbs_certlist_bytes, algorithm)
        elif not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise InvalidSignature
    except (InvalidSignature, UnsupportedAlgorithm, TypeError, ValueError):
        raise RevocationError(
            RevocationFailure.BAD_SIGNATURE, "the CRL's signature does not verify"
        ) from None
    if not allow_sha1 and isinstance(algorithm, hashes.SHA1):
        raise RevocationError(
            RevocationFailure.WEAK_SIGNATURE,
            "the CRL is signed with SHA-1 (allow_sha1_signatures)",
        )


def _check_extensions(crl: x509.CertificateRevocationList) -> None:
    for extension in crl.extensions:
        if extension.oid == ExtensionOID.DELTA_CRL_INDICATOR:
            raise RevocationError(RevocationFailure.UNSUPPORTED, "delta CRLs are not supported")
        if extension.oid == ExtensionOID.ISSUING_DISTRIBUTION_POINT:
            raise RevocationError(
                RevocationFailure.UNSUPPORTED, "partitioned or indirect CRLs are not supported"
            )
        if extension.critical and extension.oid not in _KNOWN_CRL_EXTENSIONS:
            raise RevocationError(
                RevocationFailure.CRITICAL_EXTENSION,
                f"unknown critical CRL extension {extension.oid.dotted_string}",
            )


def crl_urls(cert: x509.Certificate) -> list[str]:
    """http(s) URLs from the certificate's CRL Distribution Points (full names only)."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls = []
    for point in points:
        if point.reasons is not None or point.crl_issuer is not None:
            continue  # partitioned by reason, or indirect: not a complete CRL for this issuer
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(
                ("http://", "https://")
            ):
                urls.append(name.value)
    return urls
