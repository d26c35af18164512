"""Verdicts Envoy may cache: how long, and what to replay. Pure.

Every CheckResponse carries `dynamic_metadata` (namespace `envoy.filters.http.ext_authz`) that
the Lua filter in `envoy/verdict-cache.lua` stores per client certificate and route policy, so a
returning client is answered inside Envoy. The TTL is at most `verdict_cache_ttl`, never past
the revocation answer or the certificate, and 0 (do not cache) for anything transient.
"""

from __future__ import annotations

from datetime import datetime

from envoy.service.auth.v3 import external_auth_pb2

from authz.core.decision import Decision
from authz.core.reasons import Reason

# Refusals that may not hold a moment later: never cached.
TRANSIENT = frozenset(
    {
        Reason.REVOCATION_CHECK_FAILED,
        Reason.INTERNAL_ERROR,
        Reason.UNKNOWN_POLICY,
        Reason.POLICY_MISMATCH,
        Reason.CERTIFICATE_NOT_YET_VALID,
    }
)


def verdict_ttl(decision: Decision, now: datetime, limit: float) -> int:
    """Whole seconds Envoy may replay this verdict (0: ask every time)."""
    if limit <= 0 or decision.audit_reason is not None:
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


def with_verdict_metadata(
    response: external_auth_pb2.CheckResponse, ttl: int, policy: str
) -> external_auth_pb2.CheckResponse:
    """A copy of `response` carrying what Envoy needs to replay it for `ttl` seconds, and the
    policy it was decided under: the Lua stores it only under that policy's key."""
    result = external_auth_pb2.CheckResponse()
    result.CopyFrom(response)
    metadata: dict[str, object] = {"ttl": ttl, "policy": policy}
    if response.HasField("ok_response"):
        ok = response.ok_response
        metadata["decision"] = "allow"
        metadata["set"] = {h.header.key.lower(): h.header.value for h in ok.headers}
        metadata["remove"] = list(ok.headers_to_remove)
    else:
        denied = response.denied_response
        reason = next(
            (h.header.value for h in denied.headers if h.header.key == "x-mtls-authz-reason"), ""
        )
        metadata.update(
            decision="deny", status=int(denied.status.code), body=denied.body, reason=reason
        )
    result.dynamic_metadata.update(metadata)
    return result
