"""The Authorization/Check servicer: request → input → decision → response, and nothing else.

Fail closed: any exception in the decision becomes a denied response with HTTP 500 rather than a
gRPC error, so even an Envoy with `failure_mode_allow: true` refuses the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.core.authorizer import Authorizer
from authz.core.decision import CheckInput, Decision
from authz.core.names import issuer_text, subject_text
from authz.core.policies import DEFAULT_POLICY, POLICY_KEY
from authz.core.reasons import Reason
from authz.core.verdict import verdict_ttl
from authz.service.metrics import Metrics
from authz.transports.envoy_response import WOULD_DENY_HEADER, CertHeaderFormat, ResponseBuilder

log = logging.getLogger("authz.check")

XFCC_HEADER = "x-forwarded-client-cert"
INTERNAL_ERROR = Decision(
    False, Reason.INTERNAL_ERROR, "The authorization service failed; the request was refused."
)
# Built once at import, so answering a failure cannot itself fail.
INTERNAL_ERROR_RESPONSE = ResponseBuilder("x-client-cert", CertHeaderFormat.BASE64_DER, 400).deny(
    Reason.INTERNAL_ERROR, INTERNAL_ERROR.message
)
# Route metadata under the Lua filter's name holds the policy the verdict cache keys on
# (envoy/verdict-cache.lua); with `route_metadata_context_namespaces` Envoy sends it here.
VERDICT_CACHE_NAMESPACE = "envoy.filters.http.lua"


@dataclass(frozen=True)
class Runtime:
    """What one Check reads, swapped as a whole so a Check never sees half of a reload.

    This is the default policy; `routes` holds the named ones (each a Runtime without routes).
    """

    authorizer: Authorizer
    responses: ResponseBuilder
    audit: bool = False
    routes: Mapping[str, Runtime] = field(default_factory=dict)

    def for_policy(self, name: str) -> Runtime | None:
        if not name or name == DEFAULT_POLICY:
            return self
        return self.routes.get(name)


def requested_policy(request: external_auth_pb2.CheckRequest) -> tuple[str, str | None]:
    """The policy the route names in its context extensions, and a message when the verdict
    cache's route metadata names a different one (so its verdicts would replay elsewhere)."""
    attributes = request.attributes
    policy = attributes.context_extensions.get(POLICY_KEY, "")
    route = attributes.route_metadata_context.filter_metadata.get(VERDICT_CACHE_NAMESPACE)
    if route is None or POLICY_KEY not in route.fields:
        return policy, None
    cached_as = route.fields[POLICY_KEY].string_value
    if cached_as != (policy or DEFAULT_POLICY):
        return policy, (
            f"The route's verdict cache keys on policy {cached_as!r} but its context extension "
            f"names {policy or DEFAULT_POLICY!r}; the request was refused."
        )
    return policy, None


def check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    attributes = request.attributes
    return CheckInput(
        certificate=attributes.source.certificate,
        xfcc=request_header(request, XFCC_HEADER),
    )


def request_header(request: external_auth_pb2.CheckRequest, name: str) -> str:
    """A request header by lower-case name, from `headers` or `header_map` (encode_raw_headers)."""
    http = request.attributes.request.http
    value = str(http.headers.get(name, ""))
    if value or not http.HasField("header_map"):
        return value
    for header in http.header_map.headers:
        if header.key.lower() == name:
            return str(header.value or header.raw_value.decode("utf-8", errors="replace"))
    return ""


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, runtime: Callable[[], Runtime], metrics: Metrics | None = None) -> None:
        self._runtime = runtime
        self._metrics = metrics

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Any
    ) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        try:
            return await self._check(request, started)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Nothing may escape Check: a gRPC error would let the request through under
            # `failure_mode_allow: true`, with whatever headers the client sent.
            log.exception("check failed", extra={"reason": Reason.INTERNAL_ERROR.value})
            with contextlib.suppress(Exception):
                self._observe(INTERNAL_ERROR, started)
            return INTERNAL_ERROR_RESPONSE

    async def _check(
        self, request: external_auth_pb2.CheckRequest, started: float
    ) -> external_auth_pb2.CheckResponse:
        default = self._runtime()  # read once: a reload mid-Check does not mix configurations
        policy, conflict = requested_policy(request)
        runtime = default.for_policy(policy)
        if conflict is not None or runtime is None:
            decision = (
                Decision(False, Reason.POLICY_MISMATCH, conflict)
                if conflict is not None
                else Decision(
                    False,
                    Reason.UNKNOWN_POLICY,
                    f"The route asks for policy {policy!r}, which is not configured.",
                )
            )
            self._observe(decision, started)
            log_decision(decision, request)
            return self._respond(default.responses, decision)
        try:
            decision = await runtime.authorizer.authorize(check_input(request), datetime.now(UTC))
        except asyncio.CancelledError:
            # Envoy gave up (its timeout) or the server is stopping: nothing was decided.
            if self._metrics is not None:
                self._metrics.observe_cancelled(time.perf_counter() - started)
            log.info("check cancelled", extra=_request_fields(request))
            raise
        except Exception:
            log.exception("check failed", extra={"reason": Reason.INTERNAL_ERROR.value})
            decision = INTERNAL_ERROR
        if runtime.audit and not decision.allowed and decision.reason is not Reason.INTERNAL_ERROR:
            decision = audited(decision)
        self._observe(decision, started)
        log_decision(decision, request)
        return self._respond(runtime.responses, decision)

    def _respond(
        self, responses: ResponseBuilder, decision: Decision
    ) -> external_auth_pb2.CheckResponse:
        if responses.verdict_cache_ttl <= 0:
            return responses.build(decision)
        ttl = verdict_ttl(decision, datetime.now(UTC), responses.verdict_cache_ttl)
        return responses.build(decision, ttl)

    def _observe(self, decision: Decision, started: float) -> None:
        if self._metrics is not None:
            elapsed = time.perf_counter() - started
            if decision.audit_reason is not None:
                self._metrics.observe_audit_deny(decision.audit_reason, elapsed)
            else:
                self._metrics.observe_decision(decision.allowed, decision.reason, elapsed)


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


def _request_fields(request: external_auth_pb2.CheckRequest) -> dict[str, Any]:
    http = request.attributes.request.http
    return {"request_id": http.headers.get("x-request-id", ""), "path": http.path}


def log_decision(decision: Decision, request: external_auth_pb2.CheckRequest) -> None:
    """Denies at info, allows at debug: who, what, why. Never the certificate or other headers."""
    level = logging.DEBUG if decision.allowed else logging.INFO
    reason: Reason | None
    if decision.audit_reason is not None:
        level, verdict, reason = logging.INFO, "audit_deny", decision.audit_reason
    else:
        verdict = "allow" if decision.allowed else "deny"
        reason = decision.reason
    if not log.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "decision": verdict,
        "reason": reason.value if reason else None,
        **_request_fields(request),
    }
    leaf = decision.leaf
    if leaf is not None:
        fields["subject"] = subject_text(leaf)
        fields["issuer"] = issuer_text(leaf)
        fields["serial"] = format(leaf.serial_number, "x")
        fields["sha256"] = leaf.fingerprint(hashes.SHA256()).hex()
    if decision.revocation is not None:
        fields["ocsp_outcome"] = decision.revocation
    if decision.ocsp_latency is not None:
        fields["ocsp_latency"] = round(decision.ocsp_latency, 6)
    log.log(level, decision.message or "allowed", extra=fields)
