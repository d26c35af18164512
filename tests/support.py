"""Helpers shared by the tests: Envoy's escaping of certificates, as Envoy does it."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

# check_request_utils.cc escapes exactly these five characters.
_ENVOY_ESCAPES = {"\n": "%0A", " ": "%20", "+": "%2B", "/": "%2F", "=": "%3D"}


def envoy_escape(pem: str) -> str:
    return "".join(_ENVOY_ESCAPES.get(char, char) for char in pem)


def envoy_field(cert: x509.Certificate) -> str:
    """`attributes.source.certificate` as Envoy fills it."""
    return envoy_escape(cert.public_bytes(Encoding.PEM).decode())


def xfcc_with_chain(chain: Iterable[x509.Certificate]) -> str:
    pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in chain)
    return f'Hash=abc;Subject="CN=x,O=Lab";Chain="{envoy_escape(pem)}"'
