"""A returning client's Check reuses what was worked out for it before — the same decision
object, the revocation answer applied to it, its replay TTL — and only while each input is
still the same: the time, a new answer in the cache or a block still change the outcome."""

from __future__ import annotations

import datetime as dt

import pytest

from authz.client_cert.xfcc import XfccCertificate, XfccElement
from authz.core.authorizer import Authorizer
from authz.core.blocks import BlockKind, BlockList, Blocks
from authz.core.check import Runtime, check
from authz.core.decision import Decision, State, decide
from authz.core.issuers import IssuerPolicy
from authz.core.modes import RevocationMode
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.revocation import CertStatus, Lookup, RevocationOutcome, RevocationStatus
from authz.core.trust import TrustBundle
from authz.core.verdict import CertHeaderFormat, VerdictRules
from authz.demo.pki import Identity, LabPki
from tests.support import envoy_field, envoy_xfcc_element, xfcc_with_chain
from tests.unit.test_blocks import by_every_kind

NOW = dt.datetime.now(dt.UTC)


def state(pki: LabPki, **kwargs: object) -> State:
    return State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
        **kwargs,  # type: ignore[arg-type]
    )


def answer(kind: CertStatus, valid_for: dt.timedelta = dt.timedelta(hours=1)) -> RevocationOutcome:
    return RevocationOutcome(
        "http://ocsp.test",
        status=RevocationStatus(kind, NOW, None, NOW + valid_for),  # type: ignore[arg-type]
    )


class CachedSource:
    """A revocation source whose cache holds `outcome`: every lookup is a hit."""

    names = "OCSP responder"

    def __init__(self, outcome: RevocationOutcome) -> None:
        self.outcome = outcome

    def source_url(self, leaf: object) -> str:
        return "http://ocsp.test"

    async def check(self, leaf: object, issuer: object, url: str) -> object:
        return self.outcome, Lookup.HIT


@pytest.fixture(scope="module")
def client(pki: LabPki) -> Identity:
    return pki.client("returning")


# -- the decision ------------------------------------------------------------------------------


def test_a_returning_client_gets_the_same_decision_object(pki: LabPki, client: Identity) -> None:
    held = state(pki)
    request = CheckInput(envoy_field(client.cert), "Hash=1;URI=spiffe://lab/a")
    first = decide(request, held, NOW)
    # A fresh copy of each text, as every request parses its own.
    again = CheckInput("".join(request.certificate), "".join(request.xfcc))
    assert first.allowed and decide(again, held, NOW) is first


def test_another_chain_hint_is_another_decision_carrying_that_hint(pki: LabPki) -> None:
    """The hint feeds the chain identity headers: a decision made for one is not reused for
    another, even when the certificate's memo entry is shared."""
    held = state(pki)
    leaf = pki.client("hinted")
    field = envoy_field(leaf.cert)
    one = decide(CheckInput(field, xfcc_with_chain([leaf.cert])), held, NOW)
    other = decide(CheckInput(field, xfcc_with_chain([leaf.cert, pki.issuing.cert])), held, NOW)
    assert one is not other
    assert one.xfcc == xfcc_with_chain([leaf.cert])
    assert other.xfcc == xfcc_with_chain([leaf.cert, pki.issuing.cert])
    assert decide(CheckInput(field, xfcc_with_chain([leaf.cert])), held, NOW).xfcc == one.xfcc


def test_a_reused_decision_is_still_checked_for_validity(pki: LabPki) -> None:
    held = state(pki)
    leaf = pki.client("expiring", not_after=NOW + dt.timedelta(minutes=1))
    request = CheckInput(envoy_field(leaf.cert))
    assert decide(request, held, NOW) is decide(request, held, NOW)
    assert decide(request, held, NOW + dt.timedelta(minutes=2)).reason is (
        Reason.CERTIFICATE_EXPIRED
    )


def test_a_leaf_not_of_the_tls_peer_is_never_replayable_when_reused(
    pki: LabPki, client: Identity
) -> None:
    """XFCC without the peer certificate: the decision reused must still say Envoy may not
    replay it under the TLS peer's key."""
    held = state(pki, source=XfccCertificate(XfccElement.FIRST))
    request = CheckInput("", envoy_xfcc_element(client.cert))
    first = decide(request, held, NOW)
    assert first.allowed and not first.replayable
    assert decide(request, held, NOW) is first and not first.replayable


# -- the revocation answer applied ---------------------------------------------------------------


async def test_the_applied_answer_is_reused_only_while_the_cache_holds_the_same_one(
    pki: LabPki, client: Identity
) -> None:
    source = CachedSource(answer(CertStatus.GOOD))
    authorizer = Authorizer(state(pki), source, RevocationMode.REQUIRE)  # type: ignore[arg-type]
    request = CheckInput(envoy_field(client.cert))
    good = await authorizer.authorize(request, NOW)
    assert good.allowed and good.revocation_from == "local_cache"
    assert await authorizer.authorize(request, NOW) is good
    source.outcome = answer(CertStatus.REVOKED)  # a refresh brought a new answer
    revoked = await authorizer.authorize(request, NOW)
    assert not revoked.allowed and revoked.reason is Reason.CERTIFICATE_REVOKED


async def test_a_block_refuses_a_returning_client_at_once(pki: LabPki, client: Identity) -> None:
    blocks = Blocks()
    source = CachedSource(answer(CertStatus.GOOD))
    authorizer = Authorizer(state(pki), source, RevocationMode.REQUIRE, blocks=blocks)  # type: ignore[arg-type]
    request = CheckInput(envoy_field(client.cert))
    assert (await authorizer.authorize(request, NOW)).allowed
    assert (await authorizer.authorize(request, NOW)).allowed
    blocks.current = BlockList.of([by_every_kind(client)[BlockKind.FINGERPRINT]])
    assert (await authorizer.authorize(request, NOW)).reason is Reason.CERTIFICATE_BLOCKED


# -- the replay TTL ------------------------------------------------------------------------------


def test_the_reused_ttl_counts_down_as_the_answer_nears_its_end(client: Identity) -> None:
    rules = VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=30)
    decision = Decision(
        True,
        leaf=client.cert,
        revocation="good",
        answer_valid_until=NOW + dt.timedelta(seconds=100),
    )
    assert rules.ttl(decision, NOW) == 30
    assert rules.ttl(decision, NOW + dt.timedelta(seconds=60)) == 30
    assert rules.ttl(decision, NOW + dt.timedelta(seconds=85)) == 15
    assert rules.ttl(decision, NOW + dt.timedelta(seconds=101)) == 0
    assert rules.ttl(decision, NOW) == 30


def test_the_reused_ttl_never_outlives_the_certificate(pki: LabPki) -> None:
    rules = VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=30)
    short = pki.client("short-lived", not_after=NOW + dt.timedelta(seconds=50)).cert
    decision = Decision(True, leaf=short, revocation="off")
    assert rules.ttl(decision, NOW) == 30
    assert rules.ttl(decision, NOW + dt.timedelta(seconds=40)) <= 10


@pytest.mark.parametrize(
    "decision",
    [
        Decision(True, revocation="unchecked:timeout"),
        Decision(True, audit_reason=Reason.ISSUER_NOT_ALLOWED),
        Decision(True, revocation="good", replayable=False),
    ],
)
def test_a_verdict_never_replayed_stays_so_when_asked_again(
    decision: Decision, client: Identity
) -> None:
    rules = VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=30)
    with_leaf = Decision(
        decision.allowed,
        leaf=client.cert,
        revocation=decision.revocation,
        audit_reason=decision.audit_reason,
        replayable=decision.replayable,
    )
    assert rules.ttl(with_leaf, NOW) == 0
    assert rules.ttl(with_leaf, NOW) == 0


async def test_a_whole_check_of_a_returning_client_is_the_same_verdict(
    pki: LabPki, client: Identity
) -> None:
    rules = VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=30)
    source = CachedSource(answer(CertStatus.GOOD))
    authorizer = Authorizer(state(pki), source, RevocationMode.REQUIRE)  # type: ignore[arg-type]
    runtime = Runtime(authorizer, rules)
    request = CheckInput(envoy_field(client.cert))
    first = await check(runtime, request, NOW)
    assert first.verdict.allowed and first.verdict.ttl == 30
    assert (await check(runtime, request, NOW)).verdict is first.verdict
    near_end = await check(runtime, request, NOW + dt.timedelta(minutes=59, seconds=50))
    assert near_end.verdict.allowed and near_end.verdict.ttl == 10
