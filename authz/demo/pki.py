"""A small PKI made in code, for the demo and the tests: CAs, a server and client certificates.

Not for production: keys are written unencrypted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.core.names import parse_dn

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Identity:
    """A certificate, its key, and the chain above it (issuer first, root excluded)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def chain_pem(self) -> bytes:
        """Leaf then intermediates: what a client or server presents."""
        return self.cert_pem + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.chain
        )

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.pem` (certificate and chain) and `<stem>.key`; returns both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.chain_pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca(
    subject: str,
    issuer: Identity | None = None,
    *,
    days: int = 3650,
    key: PrivateKey | None = None,
) -> Identity:
    """A CA certificate; self-signed when `issuer` is None. `subject` is a DN string."""
    key = key or new_key()
    name = parse_dn(subject)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    chain = (issuer.cert, *issuer.chain) if issuer else ()
    # The root is not part of a presented chain.
    chain = tuple(c for c in chain if c.issuer != c.subject)
    return Identity(builder.sign(signer_key, hashes.SHA256()), key, chain)


def make_leaf(
    common_name: str,
    issuer: Identity,
    *,
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    uris: Sequence[str] = (),
    ocsp_url: str | None = None,
    crl_url: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
) -> Identity:
    """An end-entity certificate: a TLS client by default; `usages` sets the extended key usages."""
    key = new_key()
    not_before = not_before or _now() - dt.timedelta(hours=1)
    not_after = not_after or _now() + dt.timedelta(days=365)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.UniformResourceIdentifier(uri) for uri in uris]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url),
                    )
                ]
            ),
            critical=False,
        )
    if crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    chain = tuple(c for c in (issuer.cert, *issuer.chain) if c.issuer != c.subject)
    return Identity(cert, key, chain)


def pem_bundle(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class LabPki:
    """The demo and test PKI.

    root ─┬─ issuing CA (allowed)  ─ client "good"
          └─ other CA  (not allowed) ─ client "other"
    foreign root ── CA copying the issuing CA's DN ─ client "foreign"
    """

    root: Identity
    issuing: Identity
    other: Identity
    foreign_root: Identity
    foreign: Identity
    server: Identity

    ISSUING_DN = "CN=Lab Issuing CA,O=Lab"
    OTHER_DN = "CN=Lab Other CA,O=Lab"

    @classmethod
    def create(cls) -> LabPki:
        root = make_ca("CN=Lab Root CA,O=Lab")
        issuing = make_ca(cls.ISSUING_DN, root)
        foreign_root = make_ca("CN=Foreign Root CA,O=Elsewhere")
        return cls(
            root=root,
            issuing=issuing,
            other=make_ca(cls.OTHER_DN, root),
            foreign_root=foreign_root,
            foreign=make_ca(cls.ISSUING_DN, foreign_root),
            server=make_leaf(
                "localhost",
                root,
                usages=[ExtendedKeyUsageOID.SERVER_AUTH],
                dns_names=["localhost"],
                ips=["127.0.0.1"],
            ),
        )

    def client(
        self,
        name: str,
        issuer: Identity | None = None,
        *,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Identity:
        """A client certificate, from the allowed issuing CA unless `issuer` says otherwise."""
        return make_leaf(
            name,
            issuer or self.issuing,
            ocsp_url=ocsp_url,
            crl_url=crl_url,
            not_before=not_before,
            not_after=not_after,
        )


def reissue(
    template: Identity,
    issuer: Identity,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> Identity:
    """A new certificate for the template's subject and key, with a fresh serial and only the
    given extensions: cheap distinct certificates, or deliberately odd ones."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.cert.subject)
        .issuer_name(issuer.cert.subject)
        .public_key(template.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(template.cert.not_valid_before_utc)
        .not_valid_after(template.cert.not_valid_after_utc)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return Identity(builder.sign(issuer.key, hashes.SHA256()), template.key, template.chain)


def make_ocsp_signer(
    issuer: Identity, name: str = "OCSP Responder", *, with_eku: bool = True
) -> Identity:
    """A delegated OCSP responder certificate issued by `issuer` (RFC 6960 §4.2.2.2)."""
    usages = [ExtendedKeyUsageOID.OCSP_SIGNING] if with_eku else [ExtendedKeyUsageOID.CLIENT_AUTH]
    return make_leaf(name, issuer, usages=usages)
