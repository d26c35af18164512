from __future__ import annotations

import base64
import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.core.identity import (
    IDENTITY_NAMES,
    RFC9440_CERT,
    RFC9440_CHAIN,
    header_safe,
    identity_headers,
)
from authz.demo.pki import Identity, LabPki, new_key
from tests.support import xfcc_with_chain

HOSTILE_CN = 'evil\r\nX-Injected: yes\x00 "quoted", ünïcode %41'


def hostile_client(pki: LabPki) -> Identity:
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTILE_CN)]))
        .issuer_name(pki.issuing.cert.subject)
        .public_key(key.public_key())
        .serial_number(0xABCDEF)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("a.example"),
                    x509.DNSName("b.example,evil"),
                    x509.UniformResourceIdentifier("spiffe://lab.example/ns/web/sa/client"),
                    x509.UniformResourceIdentifier("https://x.example/a b"),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(pki.issuing.key, hashes.SHA256())
    )
    return Identity(cert, key, (pki.issuing.cert,))


def is_header_safe(value: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in value)


def test_every_value_is_header_safe_even_for_a_hostile_subject(pki: LabPki) -> None:
    client = hostile_client(pki)
    xfcc = xfcc_with_chain([client.cert, pki.issuing.cert])
    headers = dict(identity_headers(client.cert, xfcc, IDENTITY_NAMES))
    assert all(is_header_safe(v) for v in headers.values()), headers
    subject = headers["x-client-cert-subject"]
    assert "\r" not in subject and "\n" not in subject and "%0D%0A" in subject
    assert "%C3%BC" in subject  # UTF-8 ü, percent-encoded
    assert "%2541" in subject  # a literal % is encoded too, so decoding is unambiguous


def test_values(pki: LabPki) -> None:
    client = hostile_client(pki)
    headers = dict(identity_headers(client.cert, "", IDENTITY_NAMES))
    assert headers["x-client-cert-serial"] == "abcdef"
    assert headers["x-client-cert-sha256"] == client.cert.fingerprint(hashes.SHA256()).hex()
    assert headers["x-client-cert-issuer"] == "CN=Lab Issuing CA,O=Lab"
    assert headers["x-client-cert-not-after"] == client.cert.not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert headers["x-client-cert-spiffe-id"] == "spiffe://lab.example/ns/web/sa/client"
    assert headers["x-client-cert-dns-sans"] == "a.example,b.example%2Cevil"
    assert (
        headers["x-client-cert-uri-sans"]
        == "spiffe://lab.example/ns/web/sa/client,https://x.example/a%20b"
    )
    der = client.cert.public_bytes(Encoding.DER)
    assert headers[RFC9440_CERT] == ":" + base64.b64encode(der).decode() + ":"
    assert RFC9440_CHAIN not in headers  # no XFCC, no chain


def test_chain_comes_from_xfcc_without_the_leaf(pki: LabPki) -> None:
    client = pki.client("chain")
    xfcc = xfcc_with_chain([client.cert, pki.issuing.cert])
    headers = dict(identity_headers(client.cert, xfcc, ("chain", "rfc9440")))
    expected = ":" + base64.b64encode(pki.issuing.cert.public_bytes(Encoding.DER)).decode() + ":"
    assert headers["x-client-cert-chain"] == expected
    assert headers[RFC9440_CHAIN] == expected


def test_only_enabled_headers_and_no_empty_ones(pki: LabPki) -> None:
    plain = pki.client("plain")  # no SANs
    headers = dict(identity_headers(plain.cert, "", ("subject", "spiffe_id", "dns_sans")))
    assert set(headers) == {"x-client-cert-subject"}


def test_header_safe() -> None:
    assert header_safe("plain text") == "plain text"
    assert header_safe("a\nb") == "a%0Ab"
    assert header_safe("100%") == "100%25"
