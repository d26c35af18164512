"""What a certificate or a hostile source can make the revocation checkers do: fetch only
permitted URLs, treat any unverifiable answer as a cached failure of its source, and never serve
or refresh an answer from a source the configuration no longer picks."""

from __future__ import annotations

from authz.core.authorizer import Authorizer
from authz.core.decision import State
from authz.core.issuers import IssuerPolicy
from authz.core.modes import RevocationMode
from authz.core.names import name_key, parse_dn
from authz.core.request import CheckInput
from authz.core.revocation import Lookup, RevocationFailure, RevocationOutcome
from authz.core.trust import TrustBundle
from authz.demo.pki import Identity, LabPki, make_ocsp_signer
from authz.revocation.cache import SingleFlightCache
from authz.revocation.compact import key_parts
from authz.revocation.crl_source import CrlChecker, CrlConfig, CrlKey, CrlLoad
from authz.revocation.ocsp_source import CacheKey, OcspChecker, OcspConfig, new_cache
from tests.ocsp_responder import build_response
from tests.support import envoy_field
from tests.unit.test_checker import NOW, FakeFetcher
from tests.unit.test_crl import build_crl

METADATA = "http://169.254.169.254/latest/meta-data/iam/"


def crl_checker(fetcher: FakeFetcher, **config: object) -> CrlChecker:
    cache: SingleFlightCache[CrlKey, CrlLoad] = SingleFlightCache(100)
    return CrlChecker(fetcher, cache, CrlConfig(**config), now=lambda: NOW)  # type: ignore[arg-type]


def ocsp_checker(fetcher: FakeFetcher, **config: object) -> OcspChecker:
    cache: SingleFlightCache[CacheKey, RevocationOutcome] = new_cache(100)
    return OcspChecker(fetcher, cache, OcspConfig(**config), now=lambda: NOW)  # type: ignore[arg-type]


def undecodable(der: bytes, text: bytes) -> bytes:
    """`der` with the first occurrence of `text` made invalid UTF-8 of the same length: what a
    hostile source can put in a name cryptography must decode before any signature check."""
    assert text in der
    return der.replace(text, text[:-1] + b"\xe9", 1)


def hostile_answer(pki: LabPki, leaf: Identity) -> bytes:
    """A "good" from a delegated responder named byName, its name made undecodable."""
    signer = make_ocsp_signer(pki.issuing, "Hostile Responder")
    good = build_response((leaf.cert, pki.issuing.cert), signer, this_update=NOW, by_key=False)
    return undecodable(good, b"Hostile Responder")


# -- one allow-list for every URL a certificate names ----------------------------------------


async def test_a_crl_distribution_point_outside_the_allow_list_is_never_fetched(
    pki: LabPki,
) -> None:
    leaf = pki.client("cdp-ssrf", crl_url=METADATA)
    fetcher = FakeFetcher(b"")
    check = crl_checker(fetcher, allowed_hosts=("crl.lab.example",))
    url = check.source_url(leaf.cert)
    assert url == METADATA
    outcome, _ = await check.check(leaf.cert, pki.issuing.cert, url)
    assert outcome.failure is RevocationFailure.RESPONDER_NOT_ALLOWED
    assert fetcher.calls == []


async def test_ocsp_then_crl_falls_through_to_no_source_not_to_any_host(pki: LabPki) -> None:
    """The AIA host is refused; the CDP on another refused host must not be fetched either."""
    leaf = pki.client("both-ssrf", ocsp_url="http://169.254.169.254/ocsp", crl_url=METADATA)
    fetcher = FakeFetcher(b"")
    allowed = ("ocsp.lab.example",)
    sources = [
        ocsp_checker(fetcher, allowed_hosts=allowed),
        crl_checker(fetcher, allowed_hosts=allowed),
    ]
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    authorizer = Authorizer(state, None, RevocationMode.REQUIRE, sources)
    decision = await authorizer.authorize(CheckInput(envoy_field(leaf.cert)), NOW)
    assert not decision.allowed and decision.reason == "no_revocation_source"
    assert fetcher.calls == []


def test_configured_crl_urls_are_always_permitted(pki: LabPki) -> None:
    overrides = {name_key(parse_dn(LabPki.ISSUING_DN)): "http://10.9.9.9/ca.crl"}
    check = crl_checker(FakeFetcher(b""), overrides=overrides, allowed_hosts=("crl.lab",))
    assert check.urls.permitted("http://10.9.9.9/ca.crl")
    assert check.urls.permitted("http://crl.lab/ca.crl")
    assert not check.urls.permitted(METADATA)


# -- an answer that cannot be verified is a failure of its source -----------------------------


async def test_an_ocsp_signer_name_that_cannot_be_decoded_is_a_cached_failure(
    pki: LabPki,
) -> None:
    leaf = pki.client("hostile-name")
    fetcher = FakeFetcher(hostile_answer(pki, leaf))
    check = ocsp_checker(fetcher, failure_ttl=5)
    outcome, _ = await check.check(leaf.cert, pki.issuing.cert, "http://r/")
    assert outcome.status is None
    assert outcome.failure is RevocationFailure.UNPARSABLE
    assert (await check.check(leaf.cert, pki.issuing.cert, "http://r/"))[1] is Lookup.HIT
    assert fetcher.calls == ["http://r/"]  # remembered for failure_ttl, not fetched per Check
    assert fetcher.unusable_from == ["http://r/"]  # the responder's breaker counts it


async def test_soft_fail_gives_its_fallback_for_an_answer_that_cannot_be_decoded(
    pki: LabPki,
) -> None:
    leaf = pki.client("hostile-soft")
    check = ocsp_checker(
        FakeFetcher(hostile_answer(pki, leaf)),
        overrides={name_key(parse_dn(LabPki.ISSUING_DN)): "http://r/"},
    )
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    decision = await Authorizer(state, check, RevocationMode.SOFT_FAIL).authorize(
        CheckInput(envoy_field(leaf.cert)), NOW
    )
    assert decision.allowed and decision.revocation == "unchecked:unparsable"


async def test_a_crl_issuer_name_that_cannot_be_decoded_is_a_cached_failure(pki: LabPki) -> None:
    leaf = pki.client("hostile-crl")
    fetcher = FakeFetcher(undecodable(build_crl(pki.issuing), b"Lab Issuing CA"))
    check = crl_checker(fetcher)
    outcome, _ = await check.check(leaf.cert, pki.issuing.cert, "http://crl/")
    assert outcome.failure is RevocationFailure.UNPARSABLE
    assert (await check.check(leaf.cert, pki.issuing.cert, "http://crl/"))[1] is Lookup.HIT
    assert fetcher.calls == ["http://crl/"]
    assert fetcher.unusable_from == ["http://crl/"]


# -- an answer belongs to the responder it came from ------------------------------------------


async def test_an_answer_is_not_served_once_another_responder_is_configured(pki: LabPki) -> None:
    leaf = pki.client("moved")
    fetcher = FakeFetcher(
        build_response((leaf.cert, pki.issuing.cert), pki.issuing, this_update=NOW)
    )
    check = ocsp_checker(fetcher)
    await check.check(leaf.cert, pki.issuing.cert, "http://old/")
    _, lookup = await check.check(leaf.cert, pki.issuing.cert, "http://new/")
    assert lookup is Lookup.MISS and fetcher.calls == ["http://old/", "http://new/"]


async def test_prefetch_refreshes_only_from_the_responder_configured_now(pki: LabPki) -> None:
    leaf = pki.client("prefetch-moved")
    fetcher = FakeFetcher(
        build_response((leaf.cert, pki.issuing.cert), pki.issuing, this_update=NOW)
    )
    issuing = name_key(parse_dn(LabPki.ISSUING_DN))
    old = ocsp_checker(fetcher, overrides={issuing: "http://old/"})
    outcome, _ = await old.check(leaf.cert, pki.issuing.cert, "http://old/")
    (key,) = [key for key, _ in old.cache.due(60, 10, ahead=3600)]
    assert key_parts(key).url == "http://old/" and old.prefetch(key, outcome) is not None
    moved = OcspChecker(fetcher, old.cache, OcspConfig(overrides={issuing: "http://new/"}))
    moved._issuers.update(old._issuers)  # as after the first Check under the new configuration
    assert moved.prefetch(key, outcome) is None
    assert not moved.urls.still_picks(pki.issuing.cert, "http://old/")
    assert moved.urls.still_picks(pki.issuing.cert, "http://new/")


async def test_no_source_says_what_the_certificate_lacks_in_the_configured_terms(
    pki: LabPki,
) -> None:
    leaf = pki.client("names-nothing")
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    for sources, named in (
        ([crl_checker(FakeFetcher(b""))], "no CRL distribution point,"),
        (
            [ocsp_checker(FakeFetcher(b"")), crl_checker(FakeFetcher(b""))],
            "no OCSP responder and no CRL distribution point,",
        ),
    ):
        authorizer = Authorizer(state, None, RevocationMode.REQUIRE, sources)
        decision = await authorizer.authorize(CheckInput(envoy_field(leaf.cert)), NOW)
        assert decision.reason == "no_revocation_source" and named in decision.message
