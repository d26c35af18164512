from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from authz.core.decision import Decision
from authz.core.reasons import Reason
from authz.core.verdict import CertHeaderFormat, Verdict, VerdictRules, verdict_ttl
from authz.demo.pki import LabPki
from authz.transports.grpc_check import render

NOW = dt.datetime.now(dt.UTC)
BUILDER = VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=30)


def with_verdict_metadata(verdict: Verdict, ttl: int, policy: str) -> object:
    """The CheckResponse Envoy gets for a verdict replayable for `ttl` under `policy`."""
    return render(dataclasses.replace(verdict, ttl=ttl, policy=policy))


@pytest.fixture(scope="module")
def leaf(pki: LabPki) -> object:
    return pki.client("ttl").cert


def test_an_allow_is_bounded_by_the_answer_and_the_limit(leaf: object) -> None:
    soon = Decision(
        True, leaf=leaf, revocation="good", answer_valid_until=NOW + dt.timedelta(seconds=12)
    )  # type: ignore[arg-type]
    assert verdict_ttl(soon, NOW, 30) == 11 or verdict_ttl(soon, NOW, 30) == 12
    later = Decision(
        True, leaf=leaf, revocation="good", answer_valid_until=NOW + dt.timedelta(hours=1)
    )  # type: ignore[arg-type]
    assert verdict_ttl(later, NOW, 30) == 30
    assert verdict_ttl(Decision(True, leaf=leaf, revocation="off"), NOW, 30) == 30  # type: ignore[arg-type]


def test_an_allow_never_outlives_the_certificate(pki: LabPki) -> None:
    short = pki.client("short", not_after=NOW + dt.timedelta(seconds=5)).cert
    assert verdict_ttl(Decision(True, leaf=short, revocation="off"), NOW, 30) <= 5


@pytest.mark.parametrize(
    "decision",
    [
        Decision(False, Reason.REVOCATION_CHECK_FAILED),
        Decision(False, Reason.INTERNAL_ERROR),
        Decision(False, Reason.UNKNOWN_POLICY),
        Decision(False, Reason.CERTIFICATE_NOT_YET_VALID),
        Decision(True, revocation="unchecked:timeout"),
        Decision(True, audit_reason=Reason.ISSUER_NOT_ALLOWED),
    ],
)
def test_transient_verdicts_are_never_cached(decision: Decision) -> None:
    assert verdict_ttl(decision, NOW, 30) == 0


def test_lasting_refusals_are_cached_and_a_zero_limit_turns_it_off() -> None:
    assert verdict_ttl(Decision(False, Reason.CERTIFICATE_REVOKED), NOW, 30) == 30
    assert verdict_ttl(Decision(False, Reason.CERTIFICATE_REVOKED), NOW, 0) == 0


def test_metadata_describes_the_response(leaf: object) -> None:
    allow = with_verdict_metadata(
        BUILDER.allow(leaf, (("x-mtls-authz-revocation", "good"),)), 30, "admin"
    )  # type: ignore[arg-type]
    metadata = allow.dynamic_metadata
    assert metadata["decision"] == "allow" and metadata["ttl"] == 30
    assert metadata["policy"] == "admin"  # the Lua stores it only under this policy's key
    assert metadata["set"]["x-mtls-authz-revocation"] == "good"
    assert "x-client-cert" in metadata["set"]
    deny = with_verdict_metadata(
        BUILDER.deny(Reason.CERTIFICATE_REVOKED, "revoked"), 30, "default"
    ).dynamic_metadata
    assert (deny["decision"], deny["status"], deny["reason"]) == (
        "deny",
        400,
        "certificate_revoked",
    )
    assert '"certificate_revoked"' in deny["body"]
