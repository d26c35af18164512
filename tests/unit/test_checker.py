from __future__ import annotations

import datetime as dt

import pytest

from authz.core.names import name_key, parse_dn
from authz.core.revocation import (
    CertStatus,
    Lookup,
    RevocationError,
    RevocationFailure,
    RevocationOutcome,
)
from authz.demo.pki import Identity, LabPki
from authz.revocation.cache import SingleFlightCache
from authz.revocation.ocsp import aia_ocsp_urls
from authz.revocation.ocsp_source import CacheKey, OcspChecker, OcspConfig, new_cache
from tests.ocsp_responder import build_response

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


class FakeFetcher:
    """Answers with prepared bytes or raises; counts calls."""

    def __init__(self, answer: bytes | RevocationError) -> None:
        self.answer = answer
        self.calls: list[str] = []
        self.unusable_from: list[str] = []

    async def fetch(self, url: str, request_der: bytes) -> bytes:
        self.calls.append(url)
        if isinstance(self.answer, RevocationError):
            raise self.answer
        return self.answer

    async def get(self, url: str, max_bytes: int) -> bytes:
        return await self.fetch(url, b"")

    def unusable(self, url: str) -> None:
        self.unusable_from.append(url)


def checker(fetcher: FakeFetcher, **config: object) -> OcspChecker:
    cache: SingleFlightCache[CacheKey, RevocationOutcome] = new_cache(100)
    return OcspChecker(fetcher, cache, OcspConfig(**config), now=lambda: NOW)  # type: ignore[arg-type]


def response(leaf: Identity, pki: LabPki, **kwargs: object) -> bytes:
    return build_response((leaf.cert, pki.issuing.cert), pki.issuing, this_update=NOW, **kwargs)  # type: ignore[arg-type]


def test_aia_urls_keep_only_http_and_https(pki: LabPki) -> None:
    assert aia_ocsp_urls(pki.client("a", ocsp_url="http://ocsp.lab/").cert) == ["http://ocsp.lab/"]
    assert aia_ocsp_urls(pki.client("b", ocsp_url="HTTPS://ocsp.lab/").cert) == [
        "HTTPS://ocsp.lab/"
    ]
    assert aia_ocsp_urls(pki.client("c", ocsp_url="ldap://ocsp.lab/").cert) == []
    assert aia_ocsp_urls(pki.client("d", ocsp_url="file:///etc/passwd").cert) == []
    assert aia_ocsp_urls(pki.client("e").cert) == []


def test_override_wins_over_aia(pki: LabPki) -> None:
    leaf = pki.client("o", ocsp_url="http://from-aia/")
    overrides = {name_key(parse_dn("/O=Lab/CN=Lab Issuing CA")): "http://override/"}
    assert (
        checker(FakeFetcher(b""), overrides=overrides).responder_url(leaf.cert)
        == "http://override/"
    )
    assert checker(FakeFetcher(b"")).responder_url(leaf.cert) == "http://from-aia/"
    assert checker(FakeFetcher(b"")).responder_url(pki.client("none").cert) is None


async def test_good_answer_is_cached_until_the_earlier_of_next_update_and_max_age(
    pki: LabPki,
) -> None:
    leaf = pki.client("g")
    fetcher = FakeFetcher(response(leaf, pki, next_update=NOW + dt.timedelta(seconds=60)))
    check = checker(fetcher, max_age=300)
    outcome, lookup = await check.check(leaf.cert, pki.issuing.cert, "http://r/")
    assert outcome.status is not None and outcome.status.status is CertStatus.GOOD
    assert lookup is Lookup.MISS
    assert check._ttl(outcome.status, leaf.cert.not_valid_after_utc) == 60
    assert (await check.check(leaf.cert, pki.issuing.cert, "http://r/"))[1] is Lookup.HIT
    assert len(fetcher.calls) == 1

    far = FakeFetcher(response(leaf, pki, next_update=NOW + dt.timedelta(days=7)))
    far_outcome, _ = await checker(far, max_age=300).check(leaf.cert, pki.issuing.cert, "http://r/")
    assert far_outcome.status is not None
    assert checker(far, max_age=300)._ttl(far_outcome.status, leaf.cert.not_valid_after_utc) == 300


async def test_revoked_is_kept_until_the_certificate_expires(pki: LabPki) -> None:
    leaf = pki.client("r")
    check = checker(FakeFetcher(response(leaf, pki, status=CertStatus.REVOKED)))
    outcome, _ = await check.check(leaf.cert, pki.issuing.cert, "http://r/")
    assert outcome.status is not None and outcome.status.status is CertStatus.REVOKED
    expected = (leaf.cert.not_valid_after_utc - NOW).total_seconds()
    assert check._ttl(outcome.status, leaf.cert.not_valid_after_utc) == expected


async def test_failures_are_outcomes_not_exceptions(pki: LabPki) -> None:
    leaf = pki.client("f")
    fetcher = FakeFetcher(RevocationError(RevocationFailure.TIMEOUT, "slow"))
    check = checker(fetcher, failure_ttl=5)
    outcome, _ = await check.check(leaf.cert, pki.issuing.cert, "http://r/")
    assert outcome.status is None
    assert outcome.failure is RevocationFailure.TIMEOUT
    assert (await check.check(leaf.cert, pki.issuing.cert, "http://r/"))[1] is Lookup.HIT
    assert len(fetcher.calls) == 1


async def test_unverifiable_response_is_a_failure(pki: LabPki) -> None:
    leaf = pki.client("u")
    forged = build_response((leaf.cert, pki.issuing.cert), pki.foreign, by_key=False)
    outcome, _ = await checker(FakeFetcher(forged)).check(leaf.cert, pki.issuing.cert, "http://r/")
    assert outcome.failure in (
        RevocationFailure.BAD_SIGNATURE,
        RevocationFailure.SIGNER_NOT_FOUND,
    )


async def test_nonce_is_sent_when_configured(pki: LabPki) -> None:
    leaf = pki.client("n")
    # A response without the nonce: accepted without, refused with the option on.
    plain = FakeFetcher(response(leaf, pki))
    assert (await checker(plain).check(leaf.cert, pki.issuing.cert, "http://r/"))[0].status
    outcome, _ = await checker(plain, nonce=True).check(leaf.cert, pki.issuing.cert, "http://r/")
    assert outcome.failure is RevocationFailure.NONCE_MISMATCH


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
async def test_hash_algorithm_is_configurable(pki: LabPki, hash_name: str) -> None:
    leaf = pki.client(f"h-{hash_name}")
    fetcher = FakeFetcher(response(leaf, pki, hash_name=hash_name))
    outcome, _ = await checker(fetcher, hash_name=hash_name).check(leaf.cert, pki.issuing.cert, "u")
    assert outcome.status is not None


async def test_aia_responder_outside_the_allow_list_is_never_asked(pki: LabPki) -> None:
    leaf = pki.client("ssrf", ocsp_url="http://169.254.169.254/latest/meta-data")
    fetcher = FakeFetcher(b"")
    check = checker(fetcher, allowed_hosts=("ocsp.lab.example",))
    url = check.responder_url(leaf.cert)
    assert url is not None
    outcome, _ = await check.check(leaf.cert, pki.issuing.cert, url)
    assert outcome.failure is RevocationFailure.RESPONDER_NOT_ALLOWED
    assert fetcher.calls == []


def test_configured_responders_are_always_permitted(pki: LabPki) -> None:
    overrides = {name_key(parse_dn(LabPki.ISSUING_DN)): "http://10.9.9.9/ocsp"}
    check = checker(FakeFetcher(b""), overrides=overrides, allowed_hosts=("ocsp.lab.example",))
    assert check.urls.permitted("http://10.9.9.9/ocsp")
    assert check.urls.permitted("http://ocsp.lab.example/x")
    assert not check.urls.permitted("http://other.example/x")
