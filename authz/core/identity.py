"""Identity headers for the backend, derived from the client certificate. Pure.

Certificate contents are attacker-chosen text (a CA may put anything in a subject), so every
value is made header-safe: anything outside printable ASCII, and `%`, is percent-encoded, which
rules out header injection (CR, LF, NUL) and keeps UTF-8 names readable after decoding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz.core.certificate import byte_sequence, chain_from_xfcc, sans_of_type
from authz.core.memo import SizedMemo, text_key
from authz.core.names import issuer_text, subject_text

_PRINTABLE = {chr(c) for c in range(0x20, 0x7F)} - {"%"}
# In comma-separated lists the separator itself and spaces are encoded too.
_LIST_ITEM_SAFE = _PRINTABLE - {",", " "}


def header_safe(text: str, safe: set[str] = _PRINTABLE) -> str:
    """Percent-encode (as UTF-8) every character not in `safe`."""
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sans_list(leaf: x509.Certificate, kind: type[x509.GeneralName]) -> str:
    return ",".join(header_safe(v, _LIST_ITEM_SAFE) for v in sans_of_type(leaf, kind))


def _spiffe_id(leaf: x509.Certificate) -> str:
    return next(
        (
            header_safe(u)
            for u in sans_of_type(leaf, x509.UniformResourceIdentifier)
            if u.startswith("spiffe://")
        ),
        "",
    )


# Per-certificate headers: name → value function (empty values are not sent).
LEAF_HEADERS: dict[str, tuple[str, Callable[[x509.Certificate], str]]] = {
    "subject": ("x-client-cert-subject", lambda c: header_safe(subject_text(c))),
    "issuer": ("x-client-cert-issuer", lambda c: header_safe(issuer_text(c))),
    "serial": ("x-client-cert-serial", lambda c: format(c.serial_number, "x")),
    "fingerprint": ("x-client-cert-sha256", lambda c: c.fingerprint(hashes.SHA256()).hex()),
    "not_before": ("x-client-cert-not-before", lambda c: _rfc3339(c.not_valid_before_utc)),
    "not_after": ("x-client-cert-not-after", lambda c: _rfc3339(c.not_valid_after_utc)),
    "spiffe_id": ("x-client-cert-spiffe-id", _spiffe_id),
    "dns_sans": ("x-client-cert-dns-sans", lambda c: _sans_list(c, x509.DNSName)),
    "uri_sans": ("x-client-cert-uri-sans", lambda c: _sans_list(c, x509.UniformResourceIdentifier)),
}
CHAIN_HEADER = "x-client-cert-chain"
RFC9440_CERT, RFC9440_CHAIN = "client-cert", "client-cert-chain"
IDENTITY_NAMES: tuple[str, ...] = (*LEAF_HEADERS, "chain", "rfc9440")
# Every header this module can set: client-sent copies are always removed.
IDENTITY_HEADERS: tuple[str, ...] = (
    *(name for name, _ in LEAF_HEADERS.values()),
    CHAIN_HEADER,
    RFC9440_CERT,
    RFC9440_CHAIN,
)


@functools.lru_cache(maxsize=4096)
def leaf_headers(leaf: x509.Certificate, enabled: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The per-certificate headers enabled, computed once per certificate."""
    headers = [
        (LEAF_HEADERS[key][0], LEAF_HEADERS[key][1](leaf)) for key in enabled if key in LEAF_HEADERS
    ]
    if "rfc9440" in enabled:
        headers.append((RFC9440_CERT, byte_sequence(leaf)))
    return tuple((name, value) for name, value in headers if value)


# Chain header values by (XFCC digest, leaf): bounded by what they hold.
_CHAINS: SizedMemo[str] = SizedMemo(16 * 1024 * 1024)


def chain_value(xfcc: str, leaf: x509.Certificate) -> str:
    """RFC 9440 Client-Cert-Chain: the certificates the client sent after its leaf (from XFCC)."""
    key = (text_key(xfcc), leaf)
    found = _CHAINS.get(key)
    if found is None:
        chain = chain_from_xfcc(xfcc, leaf)
        found = ",".join(byte_sequence(c) for c in chain[1:])
        _CHAINS.put(key, found, len(found) + 256)
    return found


def identity_headers(
    leaf: x509.Certificate, xfcc: str, enabled: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    enabled = tuple(enabled)
    headers = leaf_headers(leaf, enabled)
    if xfcc and ("chain" in enabled or "rfc9440" in enabled):
        chain = chain_value(xfcc, leaf)
        if chain:
            if "chain" in enabled:
                headers += ((CHAIN_HEADER, chain),)
            if "rfc9440" in enabled:
                headers += ((RFC9440_CHAIN, chain),)
    return headers
