"""The one place that knows the order of checks: certificate → validity → issuer policy → trust.

Pure: takes what Envoy sent plus the loaded state and the time, returns a Decision. Any exception
other than Denied escaping from here is a bug; the servicer turns it into `internal_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from authz.certs import chain_from_xfcc, decode_source_certificate
from authz.names import display
from authz.policy import IssuerPolicy
from authz.reasons import Denied, Reason
from authz.trust import TrustBundle


@dataclass(frozen=True)
class CheckInput:
    """The parts of Envoy's CheckRequest that the decision reads."""

    certificate: str
    """`attributes.source.certificate`: URL-encoded PEM, empty when the client sent none."""
    xfcc: str = ""
    """The `x-forwarded-client-cert` header Envoy set, if any."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason | None = None
    message: str = ""
    leaf: x509.Certificate | None = None
    issuer: x509.Certificate | None = None
    upstream_headers: tuple[tuple[str, str], ...] = ()
    """Headers to set upstream besides the certificate header (allow only)."""
    revocation: str | None = None
    """What the revocation check found: good, revoked, unknown, unchecked:…, off, or a failure."""
    ocsp_latency: float | None = None
    """Seconds the OCSP request took, when this Check caused or joined one."""

    @classmethod
    def deny(cls, denied: Denied, leaf: x509.Certificate | None = None) -> Decision:
        return cls(False, denied.reason, denied.message, leaf)


@dataclass(frozen=True)
class State:
    """Everything loaded at start (and, later, on reload) that decisions depend on."""

    trust: TrustBundle
    policy: IssuerPolicy


def decide(check: CheckInput, state: State, now: datetime) -> Decision:
    """Decide on one request. `now` is timezone-aware UTC."""
    leaf: x509.Certificate | None = None
    try:
        leaf = decode_source_certificate(check.certificate)
        issuer = find_allowed_issuer(leaf, check.xfcc, state, now)
    except Denied as denied:
        return Decision.deny(denied, leaf)
    return Decision(True, leaf=leaf, issuer=issuer)


def find_allowed_issuer(
    leaf: x509.Certificate, xfcc: str, state: State, now: datetime
) -> x509.Certificate:
    """The trusted issuer of `leaf`, or Denied with the first rule it breaks."""
    check_validity(leaf, now)
    if not state.policy.allows(leaf.issuer):
        raise Denied(
            Reason.ISSUER_NOT_ALLOWED,
            f"Certificates issued by {display(leaf.issuer)} are not accepted.",
        )
    offered = chain_from_xfcc(xfcc) if xfcc else []
    issuer = state.trust.find_issuer(leaf, offered)
    if issuer is None:
        raise Denied(
            Reason.ISSUER_UNKNOWN,
            f"The certificate names {display(leaf.issuer)} as issuer, but no trusted CA "
            "certificate of that name signed it.",
        )
    return issuer


def check_validity(leaf: x509.Certificate, now: datetime) -> None:
    """Envoy checks validity too; this keeps a misconfigured Envoy from widening the policy."""
    try:
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        leaf.extensions  # noqa: B018 - parse them now: a malformed extension is the client's fault
    except ValueError as e:
        raise Denied(
            Reason.MALFORMED_CERTIFICATE, "The client certificate cannot be parsed."
        ) from e
    if now < not_before:
        raise Denied(
            Reason.CERTIFICATE_NOT_YET_VALID,
            f"The client certificate is not valid before {not_before.isoformat()}.",
        )
    if now > not_after:
        raise Denied(
            Reason.CERTIFICATE_EXPIRED,
            f"The client certificate expired at {not_after.isoformat()}.",
        )
