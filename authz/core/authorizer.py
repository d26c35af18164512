"""One Check, start to end: the pure decision, then the revocation check, then the final verdict.

The revocation policy (`require`, `soft-fail`, `off`) is applied here and only here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from authz.core.blocks import BlockEntry, Blocks
from authz.core.decision import Decision, State, decide
from authz.core.memo import ByIdentity
from authz.core.modes import RevocationMode
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.revocation import (
    CertStatus,
    Lookup,
    RevocationFailure,
    RevocationOutcome,
    RevocationSource,
)
from authz.core.verdict import REVOCATION_HEADER

# Where a revocation answer came from (the decision log's revocation_from).
RESPONDER, LOCAL_CACHE, SHARED_CACHE = "responder", "local_cache", "shared_cache"
# Decisions kept with the local-cache answer applied to them (a returning client's).
APPLIED_MEMO_SIZE = 4096


class Authorizer:
    """`sources` are asked in order: the first verified answer decides; a source with no URL or
    no verified answer passes to the next (`ocsp-then-crl`, `crl-then-ocsp`)."""

    def __init__(
        self,
        state: State,
        source: RevocationSource | None,
        mode: RevocationMode,
        sources: Sequence[RevocationSource] | None = None,
        blocks: Blocks | None = None,
    ) -> None:
        self.state = state
        self.mode = mode
        self.blocks = blocks if blocks is not None else Blocks()
        self.sources: tuple[RevocationSource, ...] = (
            tuple(sources) if sources is not None else ((source,) if source is not None else ())
        )
        if mode is not RevocationMode.OFF and not self.sources:
            raise ValueError("a revocation source is required unless revocation checking is off")
        self._applied: ByIdentity[Decision, tuple[RevocationOutcome, Decision]]
        self._applied = ByIdentity(APPLIED_MEMO_SIZE)

    async def authorize(self, check: CheckInput, now: datetime) -> Decision:
        decision = decide(check, self.state, now)
        if decision.leaf is not None and self.blocks.current.entries:
            # Before anything else is asked: a blocked certificate is refused whatever its
            # issuer, validity or revocation status say.
            entry = self.blocks.match(decision.leaf, now)
            if entry is not None:
                return blocked(decision, entry)
        if not decision.allowed or not self.sources or self.mode is RevocationMode.OFF:
            return dataclasses.replace(decision, revocation="off") if decision.allowed else decision
        assert decision.leaf is not None and decision.issuer is not None
        failed: RevocationOutcome | None = None
        not_allowed: RevocationOutcome | None = None
        for source in self.sources:
            url = source.source_url(decision.leaf)
            if url is None:
                continue
            outcome, lookup = await source.check(decision.leaf, decision.issuer, url)
            if outcome.status is None:
                # No verified answer from this source: the next one may have it.
                if outcome.failure is RevocationFailure.RESPONDER_NOT_ALLOWED:
                    not_allowed = outcome
                else:
                    failed = failed or outcome
                continue
            if lookup not in (Lookup.MISS, Lookup.COALESCED):
                return self._from_local_cache(decision, outcome)
            if outcome.shared:
                return apply_outcome(decision, outcome, self.mode, SHARED_CACHE)
            return apply_outcome(decision, outcome, self.mode, RESPONDER, outcome.latency)
        last = failed or not_allowed
        if last is not None:
            return apply_outcome(decision, last, self.mode)
        return no_source(decision, self.mode, names=" and no ".join(s.names for s in self.sources))

    def _from_local_cache(self, decision: Decision, outcome: RevocationOutcome) -> Decision:
        """`apply_outcome` for an answer from the local cache. It is pure, so a returning client
        (the same decision object, the same cached answer object) gets the result it got before."""
        held = self._applied.get(decision)
        if held is not None and held[0] is outcome:
            return held[1]
        applied = apply_outcome(decision, outcome, self.mode, LOCAL_CACHE)
        self._applied.put(decision, (outcome, applied))
        return applied


def blocked(decision: Decision, entry: BlockEntry) -> Decision:
    """The entry's reason is the operator's words for the client; who wrote it is not said."""
    return Decision(
        False,
        Reason.CERTIFICATE_BLOCKED,
        f"The client certificate is blocked: {entry.reason}",
        decision.leaf,
        revocation="blocked",
        replayable=False,
        block_id=entry.id,
    )


def no_source(
    decision: Decision,
    mode: RevocationMode,
    why: str = "no_source",
    names: str = "OCSP responder",
) -> Decision:
    if mode is RevocationMode.SOFT_FAIL:
        return _unchecked(decision, why)
    message = (
        "The certificate points at a revocation source mtls-authz may not fetch from "
        "(revocation_allowed_hosts)."
        if why == "responder_not_allowed"
        else f"The certificate names no {names}, and none is configured for its issuer."
    )
    return _deny(decision, Reason.NO_REVOCATION_SOURCE, message, why)


def apply_outcome(
    decision: Decision,
    outcome: RevocationOutcome,
    mode: RevocationMode,
    origin: str | None = None,
    latency: float | None = None,
) -> Decision:
    """Turn a source's outcome into the verdict for an otherwise allowed request; `origin` is
    where the answer came from, `latency` how long asking its source took (when it was asked)."""
    if origin is not None and outcome.status is None:
        decision = dataclasses.replace(decision, revocation_from=origin, ocsp_latency=latency)
    status = outcome.status
    if outcome.failure is RevocationFailure.RESPONDER_NOT_ALLOWED:
        # Not a responder failure: this certificate's responder may not be asked at all.
        return no_source(decision, mode, "responder_not_allowed")
    if status is None:
        failure = outcome.failure.value if outcome.failure else "unknown_error"
        if mode is RevocationMode.SOFT_FAIL:
            return _unchecked(decision, failure)
        # A weak signature is not transient: say which object carries it (the detail names no
        # URL), not "try again".
        message = (
            f"The revocation status could not be determined ({failure}: {outcome.detail})."
            if outcome.failure is RevocationFailure.WEAK_SIGNATURE
            else f"The revocation status could not be determined ({failure}); try again later."
        )
        return _deny(decision, Reason.REVOCATION_CHECK_FAILED, message, failure)
    if status.status is not CertStatus.GOOD and origin is not None:
        decision = dataclasses.replace(decision, revocation_from=origin, ocsp_latency=latency)
    if status.status is CertStatus.REVOKED:
        when = status.revocation_time.isoformat() if status.revocation_time else "unknown time"
        reason = f" (reason: {status.revocation_reason})" if status.revocation_reason else ""
        return _deny(
            decision,
            Reason.CERTIFICATE_REVOKED,
            f"The client certificate was revoked at {when}{reason}.",
            "revoked",
        )
    if status.status is CertStatus.UNKNOWN:
        return _deny(
            decision,
            Reason.CERTIFICATE_STATUS_UNKNOWN,
            "The OCSP responder does not know the client certificate.",
            "unknown",
        )
    # Built directly, not with dataclasses.replace (twice the cost, on every allowed Check): an
    # allowed decision from `decide` carries only the leaf, its issuer and the chain hint.
    return Decision(
        True,
        leaf=decision.leaf,
        issuer=decision.issuer,
        xfcc=decision.xfcc,
        upstream_headers=_GOOD,
        revocation="good",
        answer_valid_until=status.valid_until,
        replayable=decision.replayable,
        revocation_from=origin,
        ocsp_latency=latency,
    )


_GOOD = ((REVOCATION_HEADER, "good"),)


def _deny(decision: Decision, reason: Reason, message: str, revocation: str) -> Decision:
    return dataclasses.replace(
        decision, allowed=False, reason=reason, message=message, revocation=revocation
    )


def _unchecked(decision: Decision, failure: str = "no_source") -> Decision:
    return dataclasses.replace(
        decision,
        upstream_headers=((REVOCATION_HEADER, "unchecked"),),
        revocation=f"unchecked:{failure}",
    )
