"""A CRL whose refresh outlasts crl_cache_max_age is served until the new one is in place — no
longer than a refresh may take, never past its own nextUpdate — so no Check waits for it."""

from __future__ import annotations

import asyncio
import datetime as dt

from cryptography import x509

from authz.core.revocation import CertStatus, Lookup, RevocationError, RevocationFailure
from authz.demo.pki import Identity, LabPki
from authz.revocation.cache import SingleFlightCache
from authz.revocation.crl_source import CrlChecker, CrlConfig, CrlKey, CrlLoad
from authz.revocation.crl_worker import CrlVerifier
from tests.unit.test_checker import NOW, FakeFetcher
from tests.unit.test_crl import build_crl

URL = "http://crl.lab/issuing.crl"


class Held(dict[LabPki, Identity]):
    """One client certificate per lab PKI: the CRL revokes it."""

    def __missing__(self, pki: LabPki) -> Identity:
        self[pki] = pki.client("held")
        return self[pki]


HELD = Held()


class Gated(FakeFetcher):
    """Answers once `gate` is set."""

    def __init__(self, answer: bytes) -> None:
        super().__init__(answer)
        self.gate = asyncio.Event()
        self.gate.set()

    async def get(self, url: str, max_bytes: int) -> bytes:
        await self.gate.wait()
        return await super().get(url, max_bytes)


class Clocks:
    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return 1000.0 + self.seconds

    def now(self) -> dt.datetime:
        return NOW + dt.timedelta(seconds=self.seconds)


def setup(
    pki: LabPki, next_update: dt.timedelta, skew: float = 0.0
) -> tuple[CrlChecker, Gated, Clocks]:
    clocks = Clocks()
    crl = build_crl(
        pki.issuing,
        {HELD[pki].cert.serial_number: x509.ReasonFlags.key_compromise},
        last=NOW - dt.timedelta(seconds=1),
        next_=NOW + next_update,
    )
    fetcher = Gated(crl)
    cache: SingleFlightCache[CrlKey, CrlLoad] = SingleFlightCache(10, clocks.monotonic)
    config = CrlConfig(max_age=60, skew=skew, timeout=4, overrides=None)
    checker = CrlChecker(
        fetcher,  # type: ignore[arg-type]
        cache,
        config,
        now=clocks.now,
        verifier=CrlVerifier(timeout=30),
    )
    return checker, fetcher, clocks


async def lookup(checker: CrlChecker, pki: LabPki) -> tuple[CertStatus | None, Lookup]:
    check = checker.check(HELD[pki].cert, pki.issuing.cert, URL)
    outcome, how = await asyncio.wait_for(check, 5)  # a Check that waits for good fails
    return (outcome.status.status if outcome.status else None), how


async def test_the_crl_held_is_served_while_its_refresh_runs_past_max_age(pki: LabPki) -> None:
    checker, fetcher, clocks = setup(pki, dt.timedelta(hours=1))
    assert await lookup(checker, pki) == (CertStatus.REVOKED, Lookup.MISS)
    clocks.seconds = 50  # past 80 % of crl_cache_max_age: the refresh starts, and hangs
    fetcher.gate.clear()
    assert await lookup(checker, pki) == (CertStatus.REVOKED, Lookup.STALE_REFRESH)
    clocks.seconds = 65  # expired 5 s ago; the refresh still running
    assert await lookup(checker, pki) == (CertStatus.REVOKED, Lookup.STALE_REFRESH)
    clocks.seconds = 60 + 2 * 4 + 30 + 1  # longer than a refresh may take: wait for it
    waiting = asyncio.ensure_future(lookup(checker, pki))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    fetcher.gate.set()
    assert await waiting == (CertStatus.REVOKED, Lookup.COALESCED)


async def test_never_past_the_crl_s_own_next_update(pki: LabPki) -> None:
    checker, fetcher, clocks = setup(pki, dt.timedelta(seconds=62))
    await lookup(checker, pki)
    clocks.seconds = 50
    fetcher.gate.clear()
    await lookup(checker, pki)  # the refresh starts, and hangs
    clocks.seconds = 61  # expired (max age 60), the CRL itself still valid until 62
    assert await lookup(checker, pki) == (CertStatus.REVOKED, Lookup.STALE_REFRESH)
    clocks.seconds = 63  # past its nextUpdate: not served, not even while refreshing
    waiting = asyncio.ensure_future(lookup(checker, pki))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    fetcher.answer = RevocationError(RevocationFailure.NETWORK, "down")
    fetcher.gate.set()
    assert await waiting == (None, Lookup.COALESCED)  # the failed refresh, not the old CRL
