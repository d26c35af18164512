"""One Check, transport-neutral: policy choice → decision → audit → verdict, failing closed.

The one place that knows this order. Transports turn their wire format into a `CheckInput` and
render the `Verdict`; the service around it counts and logs (`authz.service.checks`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authz.core.authorizer import Authorizer
from authz.core.decision import Decision
from authz.core.policies import DEFAULT_POLICY
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.verdict import (
    INTERNAL_ERROR_MESSAGE,
    INTERNAL_ERROR_VERDICT,
    WOULD_DENY_HEADER,
    Verdict,
    VerdictRules,
)

INTERNAL_ERROR = Decision(False, Reason.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)
# Refused in audit mode too: an operator who blocks a certificate means it.
NEVER_AUDITED = frozenset({Reason.INTERNAL_ERROR, Reason.CERTIFICATE_BLOCKED})

# What a transport calls: a Check in, a verdict out; raises nothing but CancelledError.
CheckHandler = Callable[[CheckInput], Coroutine[Any, Any, Verdict]]


@dataclass(frozen=True)
class Runtime:
    """What one Check reads, swapped as a whole so a Check never sees half of a reload.

    This is the default policy; `routes` holds the named ones (each a Runtime without routes).
    """

    authorizer: Authorizer
    rules: VerdictRules
    audit: bool = False
    routes: Mapping[str, Runtime] = field(default_factory=dict)

    def for_policy(self, name: str) -> Runtime | None:
        if not name or name == DEFAULT_POLICY:
            return self
        return self.routes.get(name)


@dataclass(frozen=True, slots=True)
class Checked:
    decision: Decision
    verdict: Verdict
    error: Exception | None = None
    """What failed, when the verdict is `internal_error` because something raised."""


def requested_policy(request: CheckInput) -> tuple[str, str | None]:
    """The policy the route names, and a message when the verdict cache keys the route on a
    different one (its verdicts would then be replayed where another policy applies)."""
    if request.cached_as is None or request.cached_as == (request.policy or DEFAULT_POLICY):
        return request.policy, None
    return request.policy, (
        f"The route's verdict cache keys on policy {request.cached_as!r} but its context "
        f"extension names {request.policy or DEFAULT_POLICY!r}; the request was refused."
    )


async def check(default: Runtime, request: CheckInput, now: datetime) -> Checked:
    """Decide one request. Any exception becomes an `internal_error` refusal, never an allow;
    only cancellation (Envoy gave up, or the server is stopping) propagates."""
    runtime, decision, error = default, INTERNAL_ERROR, None
    try:
        policy, conflict = requested_policy(request)
        chosen = default.for_policy(policy)
        if conflict is not None:
            decision = Decision(False, Reason.POLICY_MISMATCH, conflict)
        elif chosen is None:
            decision = Decision(
                False,
                Reason.UNKNOWN_POLICY,
                f"The route asks for policy {policy!r}, which is not configured.",
            )
        else:
            runtime = chosen
            decision = await runtime.authorizer.authorize(request, now)
            if runtime.audit and not decision.allowed and decision.reason not in NEVER_AUDITED:
                decision = audited(decision)
        ttl = runtime.rules.ttl(decision, now)
        generation = runtime.authorizer.blocks.generation if ttl else ""
        return Checked(decision, runtime.rules.verdict(decision, ttl, generation))
    except asyncio.CancelledError:
        raise
    except Exception as e:
        error = e
    return Checked(INTERNAL_ERROR, INTERNAL_ERROR_VERDICT, error)


def audited(decision: Decision) -> Decision:
    """Audit mode: let the request through, telling the backend what would have refused it."""
    reason = decision.reason or Reason.INTERNAL_ERROR
    return dataclasses.replace(
        decision,
        allowed=True,
        reason=None,
        audit_reason=reason,
        upstream_headers=((WOULD_DENY_HEADER, reason.value),),
    )
