"""Certificates as Envoy hands them over: decoding, with size caps. Pure: no I/O.

Envoy puts the client's leaf certificate in `attributes.source.certificate` as PEM with newline,
space, `+`, `/` and `=` percent-escaped; `urllib.parse.unquote` restores it exactly. The
`x-forwarded-client-cert` header may add `Chain="…"`, every certificate the client sent, leaf
first: it is the client's own, unverified, so it only ever offers candidate intermediates (and
the chain forwarded in identity headers).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from authz.core.reasons import Denied, Reason

# A leaf PEM is 1–3 KB; 64 KiB leaves room for RSA-16384 keys and long SAN lists while keeping a
# hostile 1 MB field from costing a parse.
MAX_CERTIFICATE_FIELD_CHARS = 64 * 1024
# XFCC holds the whole chain Envoy saw plus subject and SANs; chains deeper than a few CAs are rare.
MAX_XFCC_CHARS = 256 * 1024
# The client's chain is only a hint: beyond the first few certificates nothing is parsed.
MAX_CHAIN_CERTIFICATES = 8

_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
XFCC_HEADER = "x-forwarded-client-cert"


def decode_source_certificate(field: str) -> x509.Certificate:
    """The leaf from `attributes.source.certificate`; raises Denied for an empty or bad field."""
    if not field.strip():
        raise Denied(Reason.MISSING_CERTIFICATE, "No client certificate was presented.")
    if len(field) > MAX_CERTIFICATE_FIELD_CHARS:
        raise Denied(
            Reason.MALFORMED_CERTIFICATE,
            f"The client certificate field is larger than {MAX_CERTIFICATE_FIELD_CHARS} bytes.",
        )
    try:
        pem = unquote(field, errors="strict")
    except UnicodeDecodeError:
        raise Denied(
            Reason.MALFORMED_CERTIFICATE, "The client certificate field is not URL-encoded UTF-8."
        ) from None
    certificates = _load_pem_certificates(pem)
    if certificates is None:
        raise Denied(
            Reason.MALFORMED_CERTIFICATE, "The client certificate is not a PEM certificate."
        )
    if len(certificates) != 1:
        raise Denied(
            Reason.MALFORMED_CERTIFICATE,
            f"Expected one client certificate, found {len(certificates)}.",
        )
    return certificates[0]


def _load_pem_certificates(pem: str) -> list[x509.Certificate] | None:
    """All certificates in `pem`, or None when it holds none or any block fails to parse."""
    if _PEM_BEGIN not in pem:
        return None
    try:
        return x509.load_pem_x509_certificates(pem.encode("ascii"))
    except ValueError:  # also UnicodeEncodeError: PEM is ASCII
        return None


def chain_from_xfcc(header: str, leaf: x509.Certificate) -> list[x509.Certificate]:
    """The chain the client presented with `leaf`, from Envoy's XFCC, leaf first.

    The element used is the one whose `Hash` is the leaf's SHA-256, and its chain must start with
    the leaf: Envoy writes SANs unquoted after `Chain`, so a certificate with a comma in a SAN
    splits the header into extra "elements" — which could carry a forged `Chain` but can never
    carry the leaf's own hash. Anything odd gives an empty list: the chain is only a hint, so
    losing it can make a decision stricter, never looser.
    """
    if not header or len(header) > MAX_XFCC_CHARS:
        return []
    wanted = leaf.fingerprint(hashes.SHA256()).hex()
    element = next((e for e in split_xfcc(header) if e.get("hash", "").lower() == wanted), None)
    chain = element.get("chain") if element else None
    if not chain:
        return []
    certificates = _load_pem_certificates(_first_blocks(unquote(chain, errors="replace")))
    if not certificates or certificates[0] != leaf:
        return []
    return certificates


def _first_blocks(pem: str, count: int = MAX_CHAIN_CERTIFICATES) -> str:
    """The first `count` PEM blocks of `pem`, cut before parsing: a client that pads its chain
    with certificates costs a text search, never a parse of each one."""
    end = 0
    for _ in range(count):
        found = pem.find(_PEM_END, end)
        if found < 0:
            return pem
        end = found + len(_PEM_END)
    return pem[:end]


def split_xfcc(header: str) -> list[dict[str, str]]:
    """XFCC elements as mappings; a key given twice in an element keeps its first value."""
    return [dict(reversed(pairs)) for pairs in split_xfcc_pairs(header)]


def split_xfcc_pairs(header: str) -> list[list[tuple[str, str]]]:
    """Parse XFCC: elements split by `,`, pairs by `;`, `key=value` with optional double quotes.

    Keys are lower-cased (they are case-insensitive). Separators inside quotes are literal; `\\`
    escapes the next character inside quotes. Returns [] when quotes are unbalanced. One pass of
    a regular expression (linear: its alternatives never overlap), not a loop per character.
    """
    elements: list[list[tuple[str, str]]] = []
    pairs: list[str] = []
    current: list[str] = []
    for quoted, plain, separator in _XFCC_TOKENS.findall(header):
        if separator:
            if separator == '"':
                return []  # a quote that never closes
            pairs.append("".join(current))
            current = []
            if separator == ",":
                elements.append(_pairs(pairs))
                pairs = []
        elif plain:
            current.append(plain)
        else:
            current.append(_ESCAPED.sub(r"\1", quoted[1:-1]) if "\\" in quoted else quoted[1:-1])
    pairs.append("".join(current))
    elements.append(_pairs(pairs))
    return elements


# A quoted run (escapes inside), an unquoted run, or a separator; a lone quote is unbalanced.
_XFCC_TOKENS = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|([^",;]+)|([,;"])', re.DOTALL)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def _pairs(pairs: list[str]) -> list[tuple[str, str]]:
    result: list[tuple[str, str]] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if sep:
            result.append((key.strip().lower(), value))
    return result


def der_base64(cert: x509.Certificate) -> str:
    """Standard base64 of the DER, one line."""
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")


def byte_sequence(cert: x509.Certificate) -> str:
    """An RFC 8941 byte sequence of the DER, as RFC 9440 Client-Cert uses."""
    return f":{der_base64(cert)}:"


def sans_of_type(leaf: x509.Certificate, kind: type[x509.GeneralName]) -> list[str]:
    """The certificate's SANs of one kind (DNS names, URIs), as text."""
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in names.get_values_for_type(kind)]  # type: ignore[arg-type]


def dns_and_uri_sans(leaf: x509.Certificate) -> tuple[str, ...]:
    """DNS then URI SANs: what route requirements match against."""
    return (*sans_of_type(leaf, x509.DNSName), *sans_of_type(leaf, x509.UniformResourceIdentifier))
