"""The client certificate from `x-forwarded-client-cert`, for gateways whose generated ext_authz
filter does not send Envoy's peer certificate (Istio, Envoy Gateway, Emissary, Gloo).

What Envoy writes (checked on 1.36.2 and 1.40.0): for the connection it terminates, one element
`By=…;Hash=<sha256 hex>;Cert="…";Chain="…";Subject="…";URI=…;DNS=…`, in that order, the fields
it is configured for. Cert and Chain are quoted URL-encoded PEM; Subject is quoted and RFC 2253
escaped; URI and DNS are **not** quoted, so a SAN can carry `,` `;` `=` `"` and make the header
look like it has more elements, or more fields, than Envoy wrote — after Envoy's own Hash, Cert
and Chain, never before them.

So the rules, each refused with `xfcc_invalid` when the header does not fit it:

- `first` (SANITIZE_SET, the safe default): the gateway dropped whatever the client sent and
  wrote one element; it comes first, and whatever a SAN injects can only follow it.
- `last` (APPEND_FORWARD behind proxies you trust): the nearest proxy's element is last, but a SAN
  injected into it could add a forged element after it, so this rule refuses any header in
  which an element carries URI or DNS: configure every proxy for Hash, Cert, Chain (Subject).

In the element used, Hash, Cert and Chain must each appear at most once, the Cert must be
there, and its SHA-256 must be the Hash Envoy wrote. Nothing else in the header is read.
"""

from __future__ import annotations

import functools
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz.client_cert.source import Presented
from authz.core.certificate import (
    MAX_XFCC_CHARS,
    XFCC_HEADER,
    decode_source_certificate,
    split_xfcc_pairs,
)
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput

# Fields a SAN can smuggle separators into (Envoy does not quote them).
_UNQUOTED = frozenset({"uri", "dns"})
# Fields the element used may carry only once.
_SINGLE = ("by", "hash", "cert", "chain")
PARSED_HEADERS = 4096


class XfccElement(StrEnum):
    FIRST = "first"
    LAST = "last"


# Why a header is refused: kept as data in the cache, raised afresh each time.
Refusal = tuple[Reason, str]


def _invalid(why: str) -> Refusal:
    return Reason.XFCC_INVALID, f"The {XFCC_HEADER} header cannot be trusted here: {why}."


@functools.lru_cache(maxsize=PARSED_HEADERS)
def _presented(header: str, rule: XfccElement) -> Presented | Refusal:
    """The element `rule` names, checked; cached per header text (a client's stays the same)."""
    if not header:
        return (
            Reason.MISSING_CERTIFICATE,
            f"No client certificate was presented (no {XFCC_HEADER} header from the gateway).",
        )
    if len(header) > MAX_XFCC_CHARS:
        return _invalid(f"it is longer than {MAX_XFCC_CHARS} characters")
    elements = split_xfcc_pairs(header)
    if not elements:
        return _invalid("its quotes do not balance")
    if rule is XfccElement.LAST and any(k in _UNQUOTED for e in elements for k, _ in e):
        return _invalid(
            "with xfcc_element: last, no element may carry URI or DNS (a SAN could forge one)"
        )
    element = elements[0] if rule is XfccElement.FIRST else elements[-1]
    fields: dict[str, str] = {}
    for key, value in element:
        if key in _SINGLE and key in fields:
            return _invalid(f"{key.capitalize()} appears twice in the element used")
        fields.setdefault(key, value)
    cert, digest = fields.get("cert", ""), fields.get("hash", "").lower()
    if not cert:
        return _invalid("the element used has no Cert (set_current_client_cert_details: cert)")
    try:
        leaf = decode_source_certificate(cert)
    except Denied as denied:
        return denied.reason, denied.message
    if leaf.fingerprint(hashes.SHA256()).hex() != digest:
        return _invalid("the element's Hash is not the SHA-256 of its Cert")
    chain = fields.get("chain", "")
    return Presented(cert, f'Hash={digest};Chain="{chain}"' if chain else "")


class XfccCertificate:
    """`certificate_source: xfcc`: the Cert of the XFCC element the gateway added."""

    name = "xfcc"

    def __init__(self, rule: XfccElement = XfccElement.FIRST) -> None:
        self.rule = rule

    def present(self, request: CheckInput) -> Presented:
        found = _presented(request.xfcc, self.rule)
        if isinstance(found, Presented):
            return found
        raise Denied(*found)

    def leaf(self, presented: Presented) -> x509.Certificate:
        return decode_source_certificate(presented.field)


class PeerThenXfcc:
    """`certificate_source: peer-then-xfcc`: Envoy's peer certificate when the ext_authz filter
    sends it (`include_peer_certificate`), else the XFCC element."""

    name = "peer-then-xfcc"

    def __init__(self, rule: XfccElement = XfccElement.FIRST) -> None:
        self._xfcc = XfccCertificate(rule)

    def present(self, request: CheckInput) -> Presented:
        if request.certificate:
            return Presented(request.certificate, request.xfcc)
        return self._xfcc.present(request)

    def leaf(self, presented: Presented) -> x509.Certificate:
        return decode_source_certificate(presented.field)
