"""Decision → Verdict: what a transport must do, as plain data. Pure.

An allow sets the certificate header (and the identity and revocation headers) upstream and
removes every other header the service owns, so the backend can trust what it sees; a refusal
has a status, a JSON body and the reason header. A verdict may carry how long Envoy's verdict
cache may replay it (`ttl`: at most `verdict_cache_ttl`, never past the revocation answer or the
certificate, 0 for anything transient) and the policy it was decided under. Transports only
render it (the gRPC CheckResponse, or an HTTP response).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authz.core.certificate import byte_sequence, der_base64
from authz.core.decision import Decision
from authz.core.identity import IDENTITY_HEADERS, identity_headers
from authz.core.memo import ByIdentity, text_key
from authz.core.policies import DEFAULT_POLICY
from authz.core.reasons import FIXED_STATUS, Reason

REASON_HEADER = "x-mtls-authz-reason"
WOULD_DENY_HEADER = "x-mtls-authz-would-deny"
REVOCATION_HEADER = "x-mtls-authz-revocation"
# What Envoy adds to an HTTP-mode check request (envoy-http.yaml): the leaf and the route's policy.
PEER_CERT_HEADER = "x-mtls-authz-peer-cert"
POLICY_HEADER = "x-mtls-authz-policy"
# Headers this service owns upstream besides the certificate header: a client-sent copy of any of
# them is removed on every allowed request (the HTTP-mode inputs too, whatever the transport).
OWNED_HEADERS: tuple[str, ...] = (
    REVOCATION_HEADER,
    WOULD_DENY_HEADER,
    *IDENTITY_HEADERS,
    PEER_CERT_HEADER,
    POLICY_HEADER,
)
ALLOW_STATUS = 200
# Allow verdicts kept per policy: clients, and per client the variants (headers, chain, ttl).
ALLOW_MEMO_SIZE = 4096
ALLOW_VARIANTS = 8
AllowKey = tuple[tuple[tuple[str, str], ...], str | bytes, int | None, str]

# Refusals that may not hold a moment later: never replayed.
TRANSIENT = frozenset(
    {
        Reason.CERTIFICATE_BLOCKED,  # an unblock must take effect at once
        Reason.CERTIFICATE_STATUS_UNKNOWN,  # a certificate issued a moment ago, soon known
        Reason.REVOCATION_CHECK_FAILED,
        Reason.INTERNAL_ERROR,
        Reason.UNKNOWN_POLICY,
        Reason.POLICY_MISMATCH,
        Reason.CERTIFICATE_NOT_YET_VALID,
    }
)


class CertHeaderFormat(StrEnum):
    BASE64_DER = "base64-der"
    """Standard base64 of the DER, one line (as Azure Application Gateway forwards it)."""
    PEM_URL = "pem-url"
    """URL-encoded PEM (as Envoy's XFCC and nginx's $ssl_client_escaped_cert)."""
    RFC9440 = "rfc9440"
    """`:base64-DER:`, an RFC 8941 byte sequence as RFC 9440 `Client-Cert` defines."""


def _encode_pem_url(cert: x509.Certificate) -> str:
    return quote(cert.public_bytes(Encoding.PEM).decode("ascii"), safe="")


CERT_ENCODERS: dict[CertHeaderFormat, Callable[[x509.Certificate], str]] = {
    CertHeaderFormat.BASE64_DER: der_base64,
    CertHeaderFormat.PEM_URL: _encode_pem_url,
    CertHeaderFormat.RFC9440: byte_sequence,
}


@functools.lru_cache(maxsize=4096)
def encode_certificate(fmt: CertHeaderFormat, leaf: x509.Certificate) -> str:
    """The header value, computed once per certificate and format (clients come back)."""
    return CERT_ENCODERS[fmt](leaf)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to answer Envoy. Allow: `headers` to set upstream (overwriting client-sent copies)
    and `remove`. Refusal: `status`, response `headers` and `body`."""

    allowed: bool
    status: int
    reason: Reason | None = None
    headers: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    body: str = ""
    ttl: int | None = None
    """Seconds Envoy's verdict cache may replay this verdict; None: say nothing about it."""
    policy: str = DEFAULT_POLICY
    generation: str = ""
    """The block list's generation it was decided under: Envoy's verdict cache stores it only
    while that is the generation it knows (a replica not yet holding a new block cannot make a
    cache that has seen the block replay its allow)."""

    def cache_metadata(self) -> dict[str, Any]:
        """What Envoy's verdict cache needs to replay this verdict (`envoy/verdict-cache.lua`)."""
        metadata: dict[str, Any] = {
            "ttl": self.ttl or 0,
            "policy": self.policy,
            "generation": self.generation,
        }
        if self.allowed:
            metadata["decision"] = "allow"
            metadata["set"] = {name.lower(): value for name, value in self.headers}
            metadata["remove"] = list(self.remove)
        else:
            reason = self.reason.value if self.reason else ""
            metadata.update(decision="deny", status=self.status, body=self.body, reason=reason)
        return metadata


@dataclass(frozen=True)
class VerdictRules:
    """How one policy's decisions become verdicts; derived values precomputed."""

    cert_header: str
    cert_header_format: CertHeaderFormat
    deny_status: int
    retry_after: int = 5
    """Seconds a client is told to wait after `revocation_check_failed`."""
    identity: tuple[str, ...] = ()
    """Identity headers to send upstream (see `authz.core.identity`)."""
    verdict_cache_ttl: float = 0.0
    """Longest Envoy may replay a verdict; 0 sends nothing about replaying."""
    policy: str = DEFAULT_POLICY
    """The policy these verdicts are decided under: told to the verdict cache with each one."""

    @functools.cached_property
    def _allows(self) -> ByIdentity[x509.Certificate, dict[AllowKey, Verdict]]:
        """Allow verdicts by leaf (identity: hashing a certificate costs ~1 µs), then by what
        else they depend on."""
        return ByIdentity(ALLOW_MEMO_SIZE)

    @functools.cached_property
    def _owned(self) -> tuple[str, ...]:
        """Every header this service sets upstream, the certificate header first."""
        return (self.cert_header.lower(), *OWNED_HEADERS)

    @property
    def _uses_chain(self) -> bool:
        return "chain" in self.identity or "rfc9440" in self.identity

    @functools.cached_property
    def _full_ttl_until(self) -> ByIdentity[Decision, datetime]:
        """By decision: until when its TTL is the whole `verdict_cache_ttl` (see `ttl`)."""
        return ByIdentity(ALLOW_MEMO_SIZE)

    def ttl(self, decision: Decision, now: datetime) -> int | None:
        """The replay TTL for this decision, or None when the verdict cache is off."""
        limit = self.verdict_cache_ttl
        if limit <= 0:
            return None
        # A returning client's decision is the same object: while neither its answer nor its
        # certificate ends within `limit` of now, its TTL is the whole limit, known without
        # working it out again.
        until = self._full_ttl_until.get(decision)
        if until is not None and now <= until:
            return int(limit)
        ttl = verdict_ttl(decision, now, limit)
        if ttl == int(limit) and decision.allowed and decision.leaf is not None:
            ends = decision.leaf.not_valid_after_utc
            if decision.answer_valid_until is not None:
                ends = min(ends, decision.answer_valid_until)
            self._full_ttl_until.put(decision, ends - timedelta(seconds=limit))
        return ttl

    def verdict(self, decision: Decision, ttl: int | None = None, generation: str = "") -> Verdict:
        """The verdict for a decision. Verdicts are shared between Checks of the same client, so
        a returning client costs a cache lookup."""
        if decision.allowed and decision.leaf is not None:
            leaf = decision.leaf
            xfcc = decision.xfcc if self._uses_chain else ""
            key = (decision.upstream_headers, text_key(xfcc), ttl, generation)
            per_leaf = self._allows.get(leaf)
            if per_leaf is None:
                per_leaf = self._allows.put(leaf, {})
            found = per_leaf.get(key)
            if found is None:
                if len(per_leaf) >= ALLOW_VARIANTS:  # the ttl counts down: old ones go
                    per_leaf.clear()
                extra = decision.upstream_headers
                found = per_leaf[key] = dataclasses.replace(
                    self.allow(leaf, extra, xfcc), ttl=ttl, generation=generation
                )
            return found
        if decision.allowed and decision.audit_reason is not None:
            # Audit mode, no usable certificate: nothing to forward, everything owned removed.
            allow = self.allow(None, decision.upstream_headers)
            return dataclasses.replace(allow, ttl=ttl, generation=generation)
        reason = decision.reason or Reason.INTERNAL_ERROR
        return _cached_deny(self, reason, decision.message, ttl, generation)

    def allow(
        self, leaf: x509.Certificate | None, extra: Iterable[tuple[str, str]] = (), xfcc: str = ""
    ) -> Verdict:
        headers: list[tuple[str, str]] = []
        if leaf is not None:
            headers.append((self.cert_header, encode_certificate(self.cert_header_format, leaf)))
            if self.identity:
                extra = (*extra, *identity_headers(leaf, xfcc, self.identity))
        headers.extend(extra)
        setting = {name.lower() for name, _ in headers}
        return Verdict(
            True,
            ALLOW_STATUS,
            headers=tuple(headers),
            remove=tuple(name for name in self._owned if name not in setting),
            policy=self.policy,
        )

    def deny(self, reason: Reason, message: str) -> Verdict:
        headers = [("content-type", "application/json"), (REASON_HEADER, reason.value)]
        if reason is Reason.REVOCATION_CHECK_FAILED:
            headers.append(("retry-after", str(self.retry_after)))
        return Verdict(
            False,
            FIXED_STATUS.get(reason, self.deny_status),
            reason,
            headers=tuple(headers),
            body=json.dumps({"error": reason.value, "message": message}),
            policy=self.policy,
        )


def verdict_ttl(decision: Decision, now: datetime, limit: float) -> int:
    """Whole seconds Envoy may replay this verdict (0: ask every time)."""
    if limit <= 0 or decision.audit_reason is not None or not decision.replayable:
        return 0
    if not decision.allowed:
        return 0 if decision.reason in TRANSIENT or decision.reason is None else int(limit)
    if decision.revocation is not None and decision.revocation.startswith("unchecked"):
        return 0  # soft-fail: the next request should try the responder again
    bounds = [limit]
    if decision.answer_valid_until is not None:
        bounds.append((decision.answer_valid_until - now).total_seconds())
    if decision.leaf is not None:
        bounds.append((decision.leaf.not_valid_after_utc - now).total_seconds())
    return max(0, int(min(bounds)))


INTERNAL_ERROR_MESSAGE = "The authorization service failed; the request was refused."
# Built once at import, so answering a failure cannot itself fail.
INTERNAL_ERROR_VERDICT = VerdictRules("x-client-cert", CertHeaderFormat.BASE64_DER, 400).deny(
    Reason.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE
)


@functools.lru_cache(maxsize=1024)
def _cached_deny(
    rules: VerdictRules, reason: Reason, message: str, ttl: int | None, generation: str
) -> Verdict:
    return dataclasses.replace(rules.deny(reason, message), ttl=ttl, generation=generation)
