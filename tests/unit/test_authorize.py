from __future__ import annotations

import datetime as dt

import pytest

from authz.core.authorizer import apply_outcome, no_source
from authz.core.decision import Decision
from authz.core.modes import RevocationMode
from authz.core.reasons import Reason
from authz.core.revocation import (
    CertStatus,
    RevocationFailure,
    RevocationOutcome,
    RevocationStatus,
)
from authz.core.verdict import REVOCATION_HEADER
from authz.demo.pki import LabPki

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def allowed(pki: LabPki) -> Decision:
    return Decision(True, leaf=pki.client("a").cert, issuer=pki.issuing.cert)


def status(kind: CertStatus, **kwargs: object) -> RevocationOutcome:
    return RevocationOutcome(
        "http://r/",
        status=RevocationStatus(kind, NOW, None, NOW + dt.timedelta(minutes=5), **kwargs),  # type: ignore[arg-type]
    )


FAILED = RevocationOutcome("http://r/", failure=RevocationFailure.TIMEOUT, detail="slow")


@pytest.mark.parametrize("mode", [RevocationMode.REQUIRE, RevocationMode.SOFT_FAIL])
def test_good_allows_and_says_so_upstream(allowed: Decision, mode: RevocationMode) -> None:
    decision = apply_outcome(allowed, status(CertStatus.GOOD), mode)
    assert decision.allowed
    assert decision.upstream_headers == ((REVOCATION_HEADER, "good"),)


@pytest.mark.parametrize("mode", [RevocationMode.REQUIRE, RevocationMode.SOFT_FAIL])
def test_revoked_denies_with_time_and_reason(allowed: Decision, mode: RevocationMode) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    outcome = status(CertStatus.REVOKED, revocation_time=when, revocation_reason="keyCompromise")
    decision = apply_outcome(allowed, outcome, mode)
    assert (decision.allowed, decision.reason) == (False, Reason.CERTIFICATE_REVOKED)
    assert "2026-01-02T03:04:05+00:00" in decision.message and "keyCompromise" in decision.message


@pytest.mark.parametrize("mode", [RevocationMode.REQUIRE, RevocationMode.SOFT_FAIL])
def test_unknown_denies_in_every_mode(allowed: Decision, mode: RevocationMode) -> None:
    decision = apply_outcome(allowed, status(CertStatus.UNKNOWN), mode)
    assert (decision.allowed, decision.reason) == (False, Reason.CERTIFICATE_STATUS_UNKNOWN)


def test_failure_denies_when_required(allowed: Decision) -> None:
    decision = apply_outcome(allowed, FAILED, RevocationMode.REQUIRE)
    assert (decision.allowed, decision.reason) == (False, Reason.REVOCATION_CHECK_FAILED)
    assert "timeout" in decision.message


def test_failure_allows_marked_unchecked_in_soft_fail(allowed: Decision) -> None:
    decision = apply_outcome(allowed, FAILED, RevocationMode.SOFT_FAIL)
    assert decision.allowed
    assert decision.upstream_headers == ((REVOCATION_HEADER, "unchecked"),)
    assert decision.revocation == "unchecked:timeout"


def test_no_source(allowed: Decision) -> None:
    required = no_source(allowed, RevocationMode.REQUIRE)
    assert (required.allowed, required.reason) == (False, Reason.NO_REVOCATION_SOURCE)
    soft = no_source(allowed, RevocationMode.SOFT_FAIL)
    assert soft.allowed and soft.upstream_headers == ((REVOCATION_HEADER, "unchecked"),)


def test_a_responder_that_may_not_be_asked_is_no_revocation_source(allowed: Decision) -> None:
    outcome = RevocationOutcome(
        "http://x/", failure=RevocationFailure.RESPONDER_NOT_ALLOWED, detail="no"
    )
    required = apply_outcome(allowed, outcome, RevocationMode.REQUIRE)
    assert required.reason is Reason.NO_REVOCATION_SOURCE
    assert "revocation_allowed_hosts" in required.message
    soft = apply_outcome(allowed, outcome, RevocationMode.SOFT_FAIL)
    assert soft.allowed and soft.revocation == "unchecked:responder_not_allowed"
