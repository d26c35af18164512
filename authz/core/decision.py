"""The one place that knows the order of checks: certificate → validity → issuer policy → trust.

Pure: takes what Envoy sent plus the loaded state and the time, returns a Decision. Any exception
other than Denied escaping from here is a bug; the servicer turns it into `internal_error`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from authz.core.certificate import chain_from_xfcc
from authz.core.issuers import IssuerPolicy
from authz.core.memo import text_key
from authz.core.names import display, issuer_text, subject_text
from authz.core.policies import PolicySpec
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.source import PEER, CertificateSource, Presented
from authz.core.trust import TrustBundle, signature_algorithm_name, weak_link


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
    """Seconds the request to the responder (or the CRL download) took, when this Check caused
    or joined one: never for an answer from a cache."""
    revocation_from: str | None = None
    """Where the revocation answer came from: responder, local_cache or shared_cache."""
    xfcc: str = ""
    """Envoy's XFCC header, for the chain headers of an allow."""
    answer_valid_until: datetime | None = None
    """Until when the revocation answer this verdict rests on is valid (for the verdict cache)."""
    audit_reason: Reason | None = None
    """Audit mode: the request is let through, but this is why it would have been refused."""
    replayable: bool = True
    """Envoy's verdict cache may replay this verdict: it keys on the TLS peer's certificate,
    and that is the certificate decided on (see `Presented.peer`)."""
    block_id: str | None = None
    """The block list entry that refused this request (`certificate_blocked`)."""

    @classmethod
    def deny(cls, denied: Denied, leaf: x509.Certificate | None = None) -> Decision:
        return cls(False, denied.reason, denied.message, leaf)


class VerifiedMemo:
    """What a certificate field proved, kept per field so a returning client is not re-parsed and
    its issuer signature not re-verified. Bounded (LRU); lives in a State, so a reload starts it
    afresh. Time-dependent checks (validity) still run on every request.

    The XFCC header is part of the match only for verdicts that depended on it (the issuer came
    from the client's chain, or was not found): most clients' keys hold just the certificate.
    Long texts are held by digest (`text_key`), so a client's padded chain is remembered too,
    and costs the memo a few bytes.
    """

    def __init__(self, max_entries: int = 2048) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str | bytes, tuple[str | bytes | None, Verified | Decision]]
        self._entries = OrderedDict()

    def get(self, certificate: str, xfcc: str) -> Verified | Decision | None:
        key = text_key(certificate)
        found = self._entries.get(key)
        if found is None:
            return None
        depends_on, verdict = found
        if depends_on is not None and depends_on != text_key(xfcc):
            return None
        self._entries.move_to_end(key)
        return verdict

    def put(self, certificate: str, xfcc: str | None, verdict: Verified | Decision) -> None:
        """`xfcc` is the header the verdict depended on, or None when it did not."""
        key = text_key(certificate)
        self._entries[key] = (None if xfcc is None else text_key(xfcc), verdict)
        self._entries.move_to_end(key)
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Verified:
    """A parsed leaf whose issuer is allowed and proven; valid between the two times."""

    leaf: x509.Certificate
    issuer: x509.Certificate
    not_before: datetime
    not_after: datetime
    allowed: list[Decision] = field(default_factory=list, compare=False, repr=False)
    """The allowed Decision last made from this, for the chain hint it carries: a returning
    client gets the same object back, so what is memoized on a decision's identity further on
    (the revocation outcome applied, the replay TTL) is found again (see `allowed_decision`)."""

    def allowed_decision(self, hint: str, replayable: bool) -> Decision:
        """`Decision(True, leaf, issuer, xfcc=hint, replayable=…)`, the same object while the
        hint and replayability are. Only for a Check that passed `check_validity`."""
        for held in self.allowed:
            if held.replayable is replayable and held.xfcc == hint:
                return held
        decision = Decision(
            True, leaf=self.leaf, issuer=self.issuer, xfcc=hint, replayable=replayable
        )
        self.allowed[:] = [decision, *self.allowed[:1]]
        return decision


@dataclass(frozen=True)
class State:
    """Everything loaded at start (and on reload) that decisions depend on."""

    trust: TrustBundle
    policy: IssuerPolicy
    spec: PolicySpec | None = None
    """A named policy's subject/SAN requirements, when it has any."""
    source: CertificateSource = PEER
    """Where the client's leaf is read from."""
    allow_sha1: bool = False
    """Accept a SHA-1 signature on the client's leaf (`allow_sha1_signatures`)."""
    memo: VerifiedMemo = field(default_factory=VerifiedMemo, compare=False, repr=False)


def decide(check: CheckInput, state: State, now: datetime) -> Decision:
    """Decide on one request. `now` is timezone-aware UTC."""
    try:
        presented = state.source.present(check)
    except Denied as denied:
        # No certificate of the TLS peer's was decided on: nothing to replay under its key.
        return dataclasses.replace(Decision.deny(denied), replayable=False)
    decision = _decide(presented, state, now)
    if not presented.peer and decision.replayable:
        return dataclasses.replace(decision, replayable=False)
    return decision


def _decide(presented: Presented, state: State, now: datetime) -> Decision:
    field, hint = presented.field, presented.chain_hint
    verified = state.memo.get(field, hint)
    if verified is None:
        verified, used_hint = verify(presented, state)
        state.memo.put(field, hint if used_hint else None, verified)
    if isinstance(verified, Decision):
        return verified
    try:
        check_validity(verified, now)
    except Denied as denied:
        return Decision.deny(denied, verified.leaf)
    return verified.allowed_decision(hint, presented.peer)


def verify(presented: Presented, state: State) -> tuple[Verified | Decision, bool]:
    """Everything about the certificate that does not depend on the time: proven, or a deny;
    and whether the verdict depended on the chain hint (XFCC)."""
    leaf: x509.Certificate | None = None
    try:
        leaf = state.source.leaf(presented)
        try:
            not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
            extensions = leaf.extensions  # a malformed extension is the client's fault
        except ValueError:
            raise Denied(
                Reason.MALFORMED_CERTIFICATE, "The client certificate cannot be parsed."
            ) from None
        check_client_certificate(extensions)
        check_issuer_name(leaf)
        issuer, used_xfcc = find_allowed_issuer(leaf, presented.chain_hint, state)
        if state.spec is not None and not state.spec.subject_allowed(leaf):
            raise Denied(
                Reason.SUBJECT_NOT_ALLOWED,
                f"{subject_text(leaf)} does not meet this route's subject requirements.",
            )
    except Denied as denied:
        # Not found in the bundle: another XFCC chain could change that.
        depends = denied.reason in (Reason.ISSUER_UNKNOWN, Reason.WEAK_SIGNATURE_ALGORITHM)
        return Decision.deny(denied, leaf), depends
    return Verified(leaf, issuer, not_before, not_after), used_xfcc


# Extensions whose meaning is understood (RFC 5280 §4.2: a certificate with any other critical
# extension must be rejected). Envoy's TLS stack rejects most such certificates already.
_UNDERSTOOD_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.INHIBIT_ANY_POLICY,
        ExtensionOID.NAME_CONSTRAINTS,
    }
)
_CLIENT_USAGES = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)


def check_client_certificate(extensions: x509.Extensions) -> None:
    """An end-entity certificate meant for TLS clients, with nothing critical we do not know."""
    for extension in extensions:
        if extension.critical and extension.oid not in _UNDERSTOOD_EXTENSIONS:
            raise Denied(
                Reason.UNSUPPORTED_CRITICAL_EXTENSION,
                f"The client certificate has a critical extension "
                f"{extension.oid.dotted_string} that is not understood.",
            )
        value = extension.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise Denied(
                Reason.NOT_A_CLIENT_CERTIFICATE,
                "A CA certificate was presented as a client certificate.",
            )
        if isinstance(value, x509.ExtendedKeyUsage) and not any(u in value for u in _CLIENT_USAGES):
            raise Denied(
                Reason.NOT_A_CLIENT_CERTIFICATE,
                "The certificate's extended key usage does not allow TLS client authentication.",
            )


def check_issuer_name(leaf: x509.Certificate) -> None:
    """An issuer name cryptography cannot decode matches no allowed issuer (the bundle could not
    hold a CA of that name either): refused as such, not as an internal error."""
    try:
        leaf.issuer  # noqa: B018 - decoding is the check
    except ValueError:
        raise Denied(
            Reason.ISSUER_NOT_ALLOWED,
            f"The certificate's issuer name {issuer_text(leaf)} cannot be decoded; "
            "no allowed issuer has it.",
        ) from None


def find_allowed_issuer(
    leaf: x509.Certificate, xfcc: str, state: State
) -> tuple[x509.Certificate, bool]:
    """The trusted issuer of `leaf` and whether XFCC supplied it, or Denied with the first rule
    it breaks."""
    if not state.policy.allows(leaf.issuer):
        raise Denied(
            Reason.ISSUER_NOT_ALLOWED,
            f"Certificates issued by {display(leaf.issuer)} are not accepted.",
        )
    issuer = state.trust.find_issuer(leaf, sha1=state.allow_sha1)
    if issuer is not None:
        return issuer, False
    # Only now is the client's own chain worth parsing: the bundle lacks the issuer.
    offered = chain_from_xfcc(xfcc, leaf) if xfcc else ()
    if offered:
        issuer = state.trust.find_issuer(leaf, offered, sha1=state.allow_sha1)
        if issuer is not None:
            return issuer, True
    if not state.allow_sha1:
        # cryptography refuses SHA-1 outright: say so when trusted CAs did sign the chain.
        weak = weak_link(leaf, state.trust.find_path(leaf, offered, sha1=True))
        if weak is not None:
            raise Denied(Reason.WEAK_SIGNATURE_ALGORITHM, weak_signature_message(leaf, *weak))
    raise Denied(
        Reason.ISSUER_UNKNOWN,
        f"The certificate names {display(leaf.issuer)} as issuer, but no trusted CA "
        "certificate of that name signed it.",
    )


def weak_signature_message(
    leaf: x509.Certificate, cert: x509.Certificate, signer: x509.Certificate
) -> str:
    """Which certificate carries the SHA-1 signature, and who made it."""
    what = (
        "The certificate"
        if cert is leaf
        else f"The intermediate CA certificate {display(cert.subject)} in the client's chain"
    )
    return (
        f"{what} is signed with {signature_algorithm_name(cert)} by "
        f"{display(signer.subject)}; SHA-1 signatures are not accepted (allow_sha1_signatures)."
    )


def check_validity(verified: Verified, now: datetime) -> None:
    """Envoy checks validity too; this keeps a misconfigured Envoy from widening the policy."""
    if now < verified.not_before:
        raise Denied(
            Reason.CERTIFICATE_NOT_YET_VALID,
            f"The client certificate is not valid before {verified.not_before.isoformat()}.",
        )
    if now > verified.not_after:
        raise Denied(
            Reason.CERTIFICATE_EXPIRED,
            f"The client certificate expired at {verified.not_after.isoformat()}.",
        )
