"""Checks for every transport: the core's decision, counted and logged from one exit point.

Never raises but for cancellation: whatever fails here is an `internal_error` refusal, so no
transport can turn an error into an allow (Envoy's `failure_mode_allow: true` included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from authz.core.check import INTERNAL_ERROR, Checked, Runtime, check
from authz.core.decision import Decision
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.verdict import INTERNAL_ERROR_VERDICT, Verdict
from authz.service.logs import log_decision, request_fields
from authz.service.metrics import Metrics

log = logging.getLogger("authz.check")


class CheckService:
    def __init__(
        self,
        runtime: Callable[[], Runtime],
        metrics: Metrics | None = None,
        transport: str = "grpc",
    ) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self.transport = transport
        if metrics is not None:
            metrics.prepare(transport)

    async def __call__(self, request: CheckInput) -> Verdict:
        started = time.perf_counter()
        try:
            # The runtime is read once: a reload mid-Check does not mix configurations.
            checked = await check(self._runtime(), request, datetime.now(UTC))
        except asyncio.CancelledError:
            # Envoy gave up (its timeout) or the server is stopping: nothing was decided.
            if self._metrics is not None:
                self._metrics.observe_cancelled(time.perf_counter() - started, self.transport)
            log.info("check cancelled", extra=request_fields(request))
            raise
        try:
            if checked.error is not None:
                log.error(
                    "check failed",
                    exc_info=checked.error,
                    extra={"reason": Reason.INTERNAL_ERROR.value},
                )
            self._observe(checked.decision, started)
            log_decision(checked.decision, request)
            return checked.verdict
        except Exception:
            log.exception("check failed", extra={"reason": Reason.INTERNAL_ERROR.value})
            return self._failed(started)

    def _failed(self, started: float) -> Verdict:
        failed = Checked(INTERNAL_ERROR, INTERNAL_ERROR_VERDICT)
        try:
            self._observe(failed.decision, started)
        except Exception:  # counting must not decide anything
            log.exception("counting a failed check failed")
        return failed.verdict

    def _observe(self, decision: Decision, started: float) -> None:
        if self._metrics is not None:
            elapsed = time.perf_counter() - started
            if decision.audit_reason is not None:
                self._metrics.observe_audit_deny(decision.audit_reason, elapsed, self.transport)
            else:
                self._metrics.observe_decision(
                    decision.allowed, decision.reason, elapsed, self.transport
                )
                if decision.block_id is not None:
                    self._metrics.observe_blocked(decision.block_id)
