from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from authz.core.decision import State, VerifiedMemo, decide
from authz.core.issuers import IssuerPolicy
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.source import PEER, Presented
from authz.core.trust import TrustBundle
from authz.demo.pki import LabPki
from tests.support import envoy_field, xfcc_with_chain

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def state(pki: LabPki) -> State:
    return State(
        trust=TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert, pki.other.cert]),
        policy=IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )


def test_allowed_issuer_is_allowed_with_the_leaf_and_issuer(pki: LabPki, state: State) -> None:
    leaf = pki.client("d1")
    decision = decide(CheckInput(envoy_field(leaf.cert)), state, NOW)
    assert decision.allowed
    assert decision.leaf == leaf.cert
    assert decision.issuer == pki.issuing.cert


def test_other_issuer_is_not_allowed(pki: LabPki, state: State) -> None:
    decision = decide(CheckInput(envoy_field(pki.client("d2", pki.other).cert)), state, NOW)
    assert (decision.allowed, decision.reason) == (False, Reason.ISSUER_NOT_ALLOWED)
    assert "CN=Lab Other CA,O=Lab" in decision.message


def test_copied_dn_from_a_foreign_ca_is_issuer_unknown(pki: LabPki, state: State) -> None:
    decision = decide(CheckInput(envoy_field(pki.client("d3", pki.foreign).cert)), state, NOW)
    assert (decision.allowed, decision.reason) == (False, Reason.ISSUER_UNKNOWN)


def test_issuer_only_in_the_client_chain_is_found_through_xfcc(pki: LabPki) -> None:
    roots_only = State(
        TrustBundle.from_certificates([pki.root.cert]), IssuerPolicy.from_dns([LabPki.ISSUING_DN])
    )
    leaf = pki.client("d4")
    field = envoy_field(leaf.cert)
    assert decide(CheckInput(field), roots_only, NOW).reason is Reason.ISSUER_UNKNOWN
    xfcc = xfcc_with_chain([leaf.cert, pki.issuing.cert])
    assert decide(CheckInput(field, xfcc), roots_only, NOW).allowed


def test_xfcc_cannot_vouch_for_a_foreign_ca(pki: LabPki, state: State) -> None:
    forged = pki.client("d5", pki.foreign)
    xfcc = xfcc_with_chain([forged.cert, pki.foreign.cert, pki.foreign_root.cert])
    decision = decide(CheckInput(envoy_field(forged.cert), xfcc), state, NOW)
    assert decision.reason is Reason.ISSUER_UNKNOWN


def test_expired_certificate(pki: LabPki, state: State) -> None:
    leaf = pki.client(
        "d6", not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=1)
    )
    assert decide(CheckInput(envoy_field(leaf.cert)), state, NOW).reason is (
        Reason.CERTIFICATE_EXPIRED
    )


def test_not_yet_valid_certificate(pki: LabPki, state: State) -> None:
    leaf = pki.client("d7", not_before=NOW + dt.timedelta(days=1))
    assert decide(CheckInput(envoy_field(leaf.cert)), state, NOW).reason is (
        Reason.CERTIFICATE_NOT_YET_VALID
    )


def test_missing_and_malformed(state: State) -> None:
    assert decide(CheckInput(""), state, NOW).reason is Reason.MISSING_CERTIFICATE
    assert decide(CheckInput("nonsense"), state, NOW).reason is Reason.MALFORMED_CERTIFICATE


def test_policy_is_checked_before_trust(pki: LabPki) -> None:
    # Not allowed and not trusted: the cheaper, clearer reason wins.
    state = State(TrustBundle.from_certificates([pki.root.cert]), IssuerPolicy.from_dns(["CN=X"]))
    decision = decide(CheckInput(envoy_field(pki.client("d8", pki.foreign).cert)), state, NOW)
    assert decision.reason is Reason.ISSUER_NOT_ALLOWED


def test_policy_accepts_slash_form(pki: LabPki) -> None:
    policy = IssuerPolicy.from_dns(["/O=lab/CN=lab issuing ca"])
    assert policy.allows(pki.issuing.cert.subject)
    assert not policy.allows(pki.other.cert.subject)


def test_a_returning_client_is_not_verified_again(
    pki: LabPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    check = CheckInput(envoy_field(pki.client("memo").cert))
    assert decide(check, state, NOW).allowed
    calls = []
    monkeypatch.setattr(
        "authz.core.decision.verify", lambda *a: calls.append(a) or pytest.fail("verified again")
    )
    assert decide(check, state, NOW).allowed
    assert calls == []
    assert len(state.memo) == 1


def test_validity_is_checked_on_every_request_even_when_remembered(pki: LabPki) -> None:
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    leaf = pki.client("memo-expiry", not_after=NOW + dt.timedelta(minutes=1))
    check = CheckInput(envoy_field(leaf.cert))
    assert decide(check, state, NOW).allowed
    later = decide(check, state, NOW + dt.timedelta(minutes=2))
    assert later.reason is Reason.CERTIFICATE_EXPIRED


def test_denials_are_remembered_too_and_the_memo_is_bounded(pki: LabPki) -> None:

    state = State(
        TrustBundle.from_certificates([pki.root.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
        memo=VerifiedMemo(max_entries=2),
    )
    for name in ("a", "b", "c"):
        other = CheckInput(envoy_field(pki.client(name, pki.other).cert))
        assert decide(other, state, NOW).reason is Reason.ISSUER_NOT_ALLOWED
        assert decide(other, state, NOW).reason is Reason.ISSUER_NOT_ALLOWED
    assert len(state.memo) == 2


def test_a_verdict_that_rested_on_xfcc_is_not_reused_with_another_xfcc(pki: LabPki) -> None:
    roots_only = State(
        TrustBundle.from_certificates([pki.root.cert]), IssuerPolicy.from_dns([LabPki.ISSUING_DN])
    )
    leaf = pki.client("memo-xfcc")
    field = envoy_field(leaf.cert)
    assert decide(
        CheckInput(field, xfcc_with_chain([leaf.cert, pki.issuing.cert])), roots_only, NOW
    ).allowed
    assert decide(CheckInput(field, ""), roots_only, NOW).reason is Reason.ISSUER_UNKNOWN
    assert decide(CheckInput(field, xfcc_with_chain([leaf.cert])), roots_only, NOW).reason is (
        Reason.ISSUER_UNKNOWN
    )


def test_the_leaf_comes_from_the_state_s_certificate_source(pki: LabPki) -> None:
    """The decision reads the leaf only through the source: another source, another leaf."""

    class FromPath:
        name = "path"

        def present(self, request: CheckInput) -> Presented:
            return Presented(request.path)

        def leaf(self, presented: Presented) -> x509.Certificate:
            return PEER.leaf(presented)

    good = envoy_field(pki.client("from-source").cert)
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
        source=FromPath(),
    )
    assert decide(CheckInput("", path=good), state, NOW).allowed
    refused = decide(CheckInput(good, path=""), state, NOW)
    assert refused.reason is Reason.MISSING_CERTIFICATE
