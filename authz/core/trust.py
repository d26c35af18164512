"""The trust bundle: the CA certificates mtls-authz accepts as issuers, and finding a leaf's issuer.

A name is not proof. The issuer is the CA certificate whose subject equals the leaf's issuer name,
whose subject key identifier matches the leaf's authority key identifier where both exist, and under
whose key the leaf's signature verifies. It is either in the bundle or, when the bundle holds only
higher CAs, an intermediate offered by the client that itself chains, the same way, to the bundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from authz.core.names import NameKey, display, name_key

# Intermediates between the leaf's issuer and an anchor in the bundle. Real PKIs use 0–2.
MAX_INTERMEDIATE_DEPTH = 4
MAX_BUNDLE_BYTES = 8 * 1024 * 1024


class TrustBundleError(ValueError):
    """The bundle file cannot be used; the message says why."""


@dataclass(frozen=True)
class TrustBundle:
    """CA certificates, indexed by normalised subject."""

    certificates: tuple[x509.Certificate, ...]
    _by_subject: dict[NameKey, tuple[x509.Certificate, ...]] = field(repr=False, compare=False)

    @classmethod
    def from_certificates(cls, certificates: Iterable[x509.Certificate]) -> TrustBundle:
        certs = tuple(certificates)
        index: dict[NameKey, list[x509.Certificate]] = {}
        for cert in certs:
            index.setdefault(name_key(cert.subject), []).append(cert)
        return cls(certs, {key: tuple(value) for key, value in index.items()})

    @classmethod
    def from_pem(cls, data: bytes, source: str = "trust bundle") -> TrustBundle:
        """Parse a PEM bundle; every certificate must be usable as a CA."""
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as e:
            raise TrustBundleError(f"{source}: no PEM certificates could be read ({e})") from e
        for cert in certs:
            if not is_ca(cert):
                raise TrustBundleError(
                    f"{source}: {display(cert.subject)} is not a CA certificate "
                    "(basicConstraints CA:FALSE)"
                )
        return cls.from_certificates(certs)

    @classmethod
    def load(cls, path: Path) -> TrustBundle:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_BUNDLE_BYTES + 1)
        except OSError as e:
            raise TrustBundleError(f"{path}: {e.strerror or e}") from e
        if len(data) > MAX_BUNDLE_BYTES:
            raise TrustBundleError(f"{path}: larger than {MAX_BUNDLE_BYTES} bytes")
        return cls.from_pem(data, str(path))

    def find_issuer(
        self,
        leaf: x509.Certificate,
        offered: Sequence[x509.Certificate] = (),
        *,
        sha1: bool = False,
    ) -> x509.Certificate | None:
        """The certificate that issued `leaf`, proven by signature, or None.

        `offered` are the client's own certificates (from XFCC): used only when they chain to the
        bundle. `sha1` accepts SHA-1 signatures on the leaf and on offered intermediates (the
        one SHA-1 rule, `allow_sha1_signatures`)."""
        path = self.find_path(leaf, offered, sha1=sha1)
        return path[0] if path else None

    def find_path(
        self,
        leaf: x509.Certificate,
        offered: Sequence[x509.Certificate] = (),
        *,
        sha1: bool = False,
    ) -> tuple[x509.Certificate, ...]:
        """The certificates from `leaf`'s issuer up to one in the bundle, each proven to have
        signed the one before it; empty when there is no such path."""
        for candidate in self._by_subject.get(name_key(leaf.issuer), ()):
            if issued(leaf, candidate, sha1=sha1):
                return (candidate,)
        return self._offered_path(leaf, offered, MAX_INTERMEDIATE_DEPTH, sha1)

    def _offered_path(
        self,
        cert: x509.Certificate,
        offered: Sequence[x509.Certificate],
        depth: int,
        sha1: bool,
    ) -> tuple[x509.Certificate, ...]:
        if depth == 0:
            return ()
        wanted = name_key(cert.issuer)
        for candidate in offered:
            if candidate == cert or name_key(candidate.subject) != wanted:
                continue
            if not (is_ca(candidate) and issued(cert, candidate, sha1=sha1)):
                continue
            for above in self._by_subject.get(name_key(candidate.issuer), ()):
                if issued(candidate, above, sha1=sha1):
                    return (candidate, above)
            rest = self._offered_path(candidate, offered, depth - 1, sha1)
            if rest:
                return (candidate, *rest)
        return ()


def weak_link(
    leaf: x509.Certificate, path: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, x509.Certificate] | None:
    """The first certificate on `leaf`'s path whose signature is SHA-1, and its signer."""
    for cert, signer in zip((leaf, *path), path, strict=False):
        if signed_with_sha1(cert):
            return cert, signer
    return None


def is_ca(cert: x509.Certificate) -> bool:
    """True unless basicConstraints says CA:FALSE (v1 roots carry no extensions at all)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return cert.version == x509.Version.v1
    return constraints.ca


def issued(cert: x509.Certificate, issuer: x509.Certificate, *, sha1: bool = False) -> bool:
    """`issuer` signed `cert`: names chain, key identifiers agree where present, signature holds.

    cryptography refuses SHA-1 signatures outright; with `sha1`, a SHA-1 signature of `cert` is
    verified with the issuer's key like any other (nothing else is relaxed)."""
    if not _key_identifiers_agree(cert, issuer):
        return False
    if sha1 and signed_with_sha1(cert):
        if cert.issuer != issuer.subject:  # as verify_directly_issued_by compares them
            return False
        try:
            verify_signature(
                issuer.public_key(),
                cert.signature,
                cert.tbs_certificate_bytes,
                hashes.SHA1(),  # noqa: S303 (only with allow_sha1_signatures)
            )
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        return True
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def signed_with_sha1(cert: x509.Certificate) -> bool:
    try:
        return isinstance(cert.signature_hash_algorithm, hashes.SHA1)
    except UnsupportedAlgorithm:
        return False


def signature_algorithm_name(cert: x509.Certificate) -> str:
    """As OpenSSL names it (`sha1WithRSAEncryption`, `ecdsa-with-SHA1`), else the dotted OID."""
    oid = cert.signature_algorithm_oid
    name = oid._name  # cryptography's table of names; "Unknown OID" when it has none
    return name if name and name != "Unknown OID" else oid.dotted_string


def verify_signature(
    key: object, signature: bytes, data: bytes, hash_algorithm: hashes.HashAlgorithm | None
) -> None:
    """Verify a PKCS#1 v1.5 RSA, ECDSA or EdDSA signature; raises InvalidSignature."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        key.verify(signature, data)
        return
    if hash_algorithm is None:
        raise UnsupportedAlgorithm("no hash algorithm for this signature")
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(hash_algorithm))
    else:
        raise UnsupportedAlgorithm(f"unsupported signer key type {type(key).__name__}")


def _key_identifiers_agree(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    return aki.key_identifier is None or aki.key_identifier == ski.digest
