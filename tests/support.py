"""Helpers shared by the tests: Envoy's escaping of certificates, as Envoy does it."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

# check_request_utils.cc escapes exactly these five characters.
_ENVOY_ESCAPES = {"\n": "%0A", " ": "%20", "+": "%2B", "/": "%2F", "=": "%3D"}


def envoy_escape(pem: str) -> str:
    return "".join(_ENVOY_ESCAPES.get(char, char) for char in pem)


def envoy_field(cert: x509.Certificate) -> str:
    """`attributes.source.certificate` as Envoy fills it."""
    return envoy_escape(cert.public_bytes(Encoding.PEM).decode())


def xfcc_with_chain(chain: Iterable[x509.Certificate], tail: str = "") -> str:
    """XFCC as Envoy writes it: Hash (SHA-256 of the leaf, the first certificate), then Chain."""
    certs = list(chain)
    pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)
    digest = certs[0].fingerprint(hashes.SHA256()).hex() if certs else "0"
    return f'Hash={digest};Chain="{envoy_escape(pem)}"{tail}'
