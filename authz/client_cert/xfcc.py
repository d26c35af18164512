"""The client certificate from `x-forwarded-client-cert`, for gateways whose generated ext_authz
filter does not send Envoy's peer certificate (Istio, Envoy Gateway, Emissary, Gloo).

What Envoy writes (`ConnectionManagerUtility::mutateXfccRequestHeader`; checked on 1.36.2 and
1.40.0): for the connection it terminates, one element — `By=<its own URI SAN>` (one per SAN, if
any), `Hash=<SHA-256 hex of the leaf>`, then the details configured, in this order:
`Cert="…"` and `Chain="…"` (URL-encoded PEM: only newline, space, `+`, `/`, `=` escaped),
`Subject="…"` (RFC 2253: `"` `\\` `,` `;` `+` `<` `>`, a leading `#` or space and a trailing
space escaped with `\\`, other bytes as `\\XX`), `URI=…` and `DNS=…` **unquoted**, so a SAN can
carry `,` `;` `=` `"` and make the header look like it has more elements, or more fields, than
Envoy wrote. Without a client certificate Envoy removes the header altogether.

So the rules, each refused with `xfcc_invalid` when the header does not fit:

- `first` (SANITIZE_SET, the safe default): the gateway dropped whatever the client sent and
  wrote one element; it comes first, and whatever a SAN injects can only follow Hash, Cert and
  Chain. Hash, Cert and Chain must each appear once in the element used.
- `last` (APPEND_FORWARD behind proxies you trust): the client's own header is kept verbatim in
  front of the element the nearest proxy appends — unbalanced quotes and all — so the header is
  never read from the start. Envoy's element is read **from the end** and must be exactly what
  Envoy writes (By, a 64-hex Hash, URL-encoded Cert and Chain, a Subject with only RFC 2253
  escapes) and begin right after a comma or at the start: no text before it can change which
  element is read. A SAN could forge a whole element after Envoy's, so a header holding Envoy's
  `;URI=` or `;DNS=` anywhere is refused: configure every proxy for Hash, Cert, Chain (Subject).

In the element used, the Cert must be there and its SHA-256 must be the Hash Envoy wrote.
"""

from __future__ import annotations

import dataclasses
import re
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz.core.certificate import (
    MAX_XFCC_CHARS,
    XFCC_HEADER,
    decode_source_certificate,
    split_xfcc_pairs,
)
from authz.core.memo import SizedMemo, text_key
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.source import Presented

# Fields the element used may carry only once (`first`).
_SINGLE = ("by", "hash", "cert", "chain")
# What one proxy writes, as Envoy writes it (for `last`).
_HASH = re.compile(r"[0-9a-f]{64}")
_ENCODED_PEM = re.compile(r"[0-9A-Za-z%-]*")
_SUBJECT = re.compile(r'(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[ "#+,;<=>\\]|\\[0-9A-F]{2})*')
_BY = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")  # printable; no space , ; " \
# Envoy's quoted fields in the order it writes them; reading backwards, each may be followed only
# by those before it.
_QUOTED = ("Cert", "Chain", "Subject")
_QUOTED_VALUE = {"Cert": _ENCODED_PEM, "Chain": _ENCODED_PEM, "Subject": _SUBJECT}
# What Envoy writes before a SAN it does not quote (always after Hash, so after a `;`).
_UNQUOTED_KEYS = (";URI=", ";DNS=")
# Headers whose element was found (or refused), by digest: a client's header stays the same
# from request to request. Bounded by what the entries hold, not by count.
PARSED_BYTES = 16 * 1024 * 1024
_REFUSAL_BYTES = 256


class XfccElement(StrEnum):
    FIRST = "first"
    LAST = "last"


# Why a header is refused: kept as data in the memo, raised afresh each time.
Refusal = tuple[Reason, str]


def _invalid(why: str) -> Refusal:
    return Reason.XFCC_INVALID, f"The {XFCC_HEADER} header cannot be trusted here: {why}."


_PARSED: dict[XfccElement, SizedMemo[Presented | Refusal]] = {
    rule: SizedMemo(PARSED_BYTES) for rule in XfccElement
}


def _presented(header: str, rule: XfccElement) -> Presented | Refusal:
    """The element `rule` names, checked; remembered by the header's digest. The size is
    checked before anything is parsed or remembered."""
    if not header:
        return (
            Reason.MISSING_CERTIFICATE,
            f"No client certificate was presented (no {XFCC_HEADER} header from the gateway).",
        )
    if len(header) > MAX_XFCC_CHARS:
        return _invalid(f"it is longer than {MAX_XFCC_CHARS} characters")
    memo = _PARSED[rule]
    key = text_key(header)
    found = memo.get(key)
    if found is None:
        found = _parse(header, rule)
        size = len(found.field) + len(found.chain_hint) if isinstance(found, Presented) else 0
        memo.put(key, found, size + _REFUSAL_BYTES)
    return found


def _parse(header: str, rule: XfccElement) -> Presented | Refusal:
    found = last_element(header) if rule is XfccElement.LAST else _first_element(header)
    if isinstance(found, str):
        return _invalid(found)
    cert, digest = found.get("cert", ""), found.get("hash", "").lower()
    if not cert:
        return _invalid("the element used has no Cert (set_current_client_cert_details: cert)")
    try:
        leaf = decode_source_certificate(cert)
    except Denied as denied:
        return denied.reason, denied.message
    if leaf.fingerprint(hashes.SHA256()).hex() != digest:
        return _invalid("the element's Hash is not the SHA-256 of its Cert")
    chain = found.get("chain", "")
    return Presented(cert, f'Hash={digest};Chain="{chain}"' if chain else "", peer=False)


def _first_element(header: str) -> dict[str, str] | str:
    """The first element's fields (lower-case keys), or why the header has none to use."""
    elements = split_xfcc_pairs(header)
    if not elements:
        return "its quotes do not balance"
    fields: dict[str, str] = {}
    for key, value in elements[0]:
        if key in _SINGLE and key in fields:
            return f"{key.capitalize()} appears twice in the element used"
        fields.setdefault(key, value)
    return fields


def last_element(header: str) -> dict[str, str] | str:
    """The element the nearest proxy appended, read from the end of the header exactly as Envoy
    writes it (lower-case keys), or why the end of the header is not such an element."""
    if any(key in header for key in _UNQUOTED_KEYS):
        return (
            "with xfcc_element: last, no element may carry URI or DNS (a SAN could forge one); "
            "set only cert, chain and subject in set_current_client_cert_details"
        )
    fields: dict[str, str] = {}
    end = len(header)
    may_follow: tuple[str, ...] = _QUOTED  # reading backwards: Subject, then Chain, then Cert
    while end and header[end - 1] == '"':
        opening = _opening_quote(header, end - 1)
        key_start = header.rfind(";", 0, opening) if opening > 0 else -1
        key = header[key_start + 1 : opening - 1] if key_start >= 0 else ""
        if key_start < 0 or header[opening - 1] != "=" or key not in may_follow:
            return "its last element does not end as Envoy writes one"
        if not _QUOTED_VALUE[key].fullmatch(header, opening + 1, end - 1):
            return f"the {key} of its last element is not as Envoy writes it"
        fields[key.lower()] = header[opening + 1 : end - 1]
        may_follow = may_follow[: may_follow.index(key)]
        end = key_start
    start = end - len("Hash=") - 64
    if (
        start < 0
        or not header.startswith("Hash=", start)
        or not _HASH.fullmatch(header, end - 64, end)
    ):
        return "its last element has no Hash as Envoy writes it"
    fields["hash"] = header[end - 64 : end]
    while start and header[start - 1] == ";":  # By=, which Envoy writes before Hash
        by = max(header.rfind(";", 0, start - 1), header.rfind(",", 0, start - 1)) + 1
        if not header.startswith("By=", by) or not _BY.fullmatch(header, by + 3, start - 1):
            return "its last element does not begin as Envoy writes one"
        start = by
    if start and header[start - 1] != ",":
        return "its last element does not begin as Envoy writes one"
    return fields


def _opening_quote(header: str, closing: int) -> int:
    """The quote that opens the value closed at `closing`: the nearest one before it that no odd
    run of backslashes escapes; -1 when there is none."""
    at = header.rfind('"', 0, closing)
    while at >= 0:
        before = at
        while before and header[before - 1] == "\\":
            before -= 1
        if (at - before) % 2 == 0:
            return at
        at = header.rfind('"', 0, before)
    return -1


class XfccCertificate:
    """`certificate_source: xfcc`: the Cert of the XFCC element the gateway added."""

    name = "xfcc"

    def __init__(self, rule: XfccElement = XfccElement.FIRST) -> None:
        self.rule = rule

    def present(self, request: CheckInput) -> Presented:
        found = _presented(request.xfcc, self.rule)
        if not isinstance(found, Presented):
            raise Denied(*found)
        if found.peer != (found.field == request.certificate):  # Envoy's own peer certificate?
            found = dataclasses.replace(found, peer=not found.peer)
        return found

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
