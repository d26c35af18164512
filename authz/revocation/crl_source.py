"""CRLs as a revocation source: cache → fetch → verify → cache, one CRL per issuer and URL.

A CRL is downloaded once and kept (indexed by serial) until its nextUpdate, at most
`max_age`; a hit past 80 % of that refreshes it in the background, so once loaded no request
waits on a download, and a failed refresh keeps the CRL still valid.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from cryptography import x509

from authz.core.names import NameKey
from authz.core.revocation import Lookup, RevocationFailure, RevocationOutcome
from authz.revocation.cache import Loaded, SingleFlightCache
from authz.revocation.crl import crl_urls
from authz.revocation.crl_index import CrlIndex
from authz.revocation.crl_worker import CrlVerifier
from authz.revocation.fetch import Body, HttpFetcher
from authz.revocation.loading import (
    Observer,
    SourceLoader,
    SourceUrls,
    issuer_fingerprint,
    shared_key,
)
from authz.revocation.shared import REFRESH_AT, SharedAnswers, SharedKey

CrlKey = tuple[str, bytes]
CRL_READ_PACE = 100e6
"""Bytes per second a CRL is read at, at most: a million-entry CRL (50 MB) in half a second,
spread so that Checks are not held back behind it while it arrives at loopback speed."""
SHARED_CRL_MAX_BYTES = 8 * 1024 * 1024
"""Larger CRLs are not put in the shared cache: reading tens of MB back would not fit in
revocation_cache_timeout, and would hold a single-threaded Redis for every other client
meanwhile. Each replica downloads them from the distribution point, as every relying party
of the CA does."""


@dataclass(frozen=True, slots=True)
class CrlLoad:
    """A verified CRL, or why there is none."""

    url: str
    index: CrlIndex | None = None
    failure: RevocationFailure | None = None
    detail: str = ""
    latency: float = 0.0
    shared: bool = False
    """Read from the shared revocation cache rather than downloaded."""


@dataclass(frozen=True)
class CrlConfig:
    skew: float = 300.0
    max_age: float = 3600.0
    failure_ttl: float = 5.0
    overrides: Mapping[NameKey, str] | None = None
    allowed_hosts: tuple[str, ...] = ()
    """Where a distribution point may point: the same list as for OCSP."""
    timeout: float = 4.0
    """Seconds one CRL download may take."""
    allow_sha1: bool = False
    """Accept SHA-1-signed CRLs."""
    max_bytes: int = 64 * 1024 * 1024
    """Largest CRL downloaded (streamed; a larger one fails as too_large)."""


class CrlChecker:
    names = "CRL distribution point"

    def __init__(
        self,
        fetcher: HttpFetcher,
        cache: SingleFlightCache[CrlKey, CrlLoad],
        config: CrlConfig,
        observer: Observer | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        shared: SharedAnswers | None = None,
        verifier: CrlVerifier | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._verifier = verifier or CrlVerifier()
        self._unshared: set[CrlKey] = set()
        """CRLs last seen larger than SHARED_CRL_MAX_BYTES: fetched without the shared cache."""
        self._cache = cache
        self._config = config
        self._now = now
        self.urls = SourceUrls(config.overrides or {}, config.allowed_hosts)
        self._loader = SourceLoader(
            "crl", self.urls, fetcher.unusable, observer, shared, config.timeout
        )
        self._issuers: dict[bytes, x509.Certificate] = {}

    def source_url(self, leaf: x509.Certificate) -> str | None:
        """The configured CRL for the leaf's issuer, else the first http(s) distribution point."""
        return self.urls.choose(leaf, crl_urls(leaf))

    async def check(
        self, leaf: x509.Certificate, issuer: x509.Certificate, url: str
    ) -> tuple[RevocationOutcome, Lookup]:
        fingerprint = issuer_fingerprint(issuer)
        self._issuers[fingerprint] = issuer
        key = (url, fingerprint)
        loaded, lookup = await self._cache.get(
            key, lambda: self._load(issuer, url, self._cache.peek(key)), self._hold
        )
        if loaded.index is None:
            failed = RevocationOutcome(url, None, loaded.failure, loaded.detail, loaded.latency)
            return failed, lookup
        status = loaded.index.status(leaf.serial_number)
        outcome = RevocationOutcome(
            url, status=status, latency=loaded.latency, shared=loaded.shared
        )
        return outcome, lookup

    async def preload(self, issuers: Iterable[x509.Certificate]) -> list[CrlLoad]:
        """The CRLs configured in crl_urls for these issuers, loaded now: at start, so that a
        replica is ready only once it holds them and no Check waits for a first load."""
        jobs = []
        for issuer in issuers:
            url = self.urls.configured_for(issuer)
            if url is not None:
                fingerprint = issuer_fingerprint(issuer)
                self._issuers[fingerprint] = issuer
                key = (url, fingerprint)
                jobs.append(self._cache.get(key, partial(self._load, issuer, url), self._hold))
        return [loaded for loaded, _ in await asyncio.gather(*jobs)]

    def _hold(self, loaded: CrlLoad, late: float) -> bool:
        """A CRL past crl_cache_max_age whose refresh is in flight is served until the new one
        is in place — no longer than the refresh may take, and never past its own nextUpdate
        (with the skew allowed): Checks do not wait while a large CRL is verified."""
        index = loaded.index
        # A refresh: a wait on another replica's download and a download (crl_timeout each),
        # and the verification.
        longest = 2 * self._config.timeout + self._verifier.timeout
        if index is None or late > longest:
            return False
        return self._now() <= index.valid_until + dt.timedelta(seconds=self._config.skew)

    def prefetch(
        self, key: CrlKey, loaded: CrlLoad
    ) -> Callable[[], Awaitable[Loaded[CrlLoad]]] | None:
        """A loader that downloads the CRL again, for the prefetcher."""
        issuer = self._issuers.get(key[1])
        if issuer is None or not self.urls.still_picks(issuer, key[0]):
            return None
        return lambda: self._load(issuer, key[0], loaded)

    async def _load(
        self, issuer: x509.Certificate, url: str, held: CrlLoad | None = None
    ) -> Loaded[CrlLoad]:
        """`held`: the CRL a refresh replaces; a shared CRL must then be newer."""
        config = self._config
        held_since = held.index.this_update if held is not None and held.index else None

        def fresh(index: CrlIndex) -> bool:
            newer = held_since is None or index.this_update > held_since
            return newer and self._fresh(index)

        async def verify(body: Body) -> CrlIndex:
            return await self._verifier.verify(
                body,
                issuer,
                self._now(),
                skew=dt.timedelta(seconds=config.skew),
                max_age=dt.timedelta(seconds=config.max_age),
                allow_sha1=config.allow_sha1,
                url=url,
            )

        key = (url, issuer_fingerprint(issuer))
        shared = None if key in self._unshared else SharedKey(
            shared_key("crl", key[1].hex(), url),
            fresh,
            lambda index: max(0.0, (self._life_end(index) - self._now()).total_seconds()),
            max_bytes=SHARED_CRL_MAX_BYTES,
        )  # fmt: skip
        attempt = await self._loader.load(
            url,
            lambda: self._fetcher.get(url, config.max_bytes),
            verify,
            lambda _: "loaded",
            {"crl": url},
            shared,
        )
        if attempt.signed:
            if len(attempt.signed) > SHARED_CRL_MAX_BYTES:
                self._unshared.add(key)
            else:
                self._unshared.discard(key)
        if attempt.answer is None:
            assert attempt.error is not None
            error = attempt.error
            failed = CrlLoad(url, None, error.failure, error.detail, attempt.latency)
            return Loaded(failed, config.failure_ttl, definitive=False)
        if attempt.shared:
            ttl = max(0.0, (self._life_end(attempt.answer) - self._now()).total_seconds())
        else:
            remaining = (attempt.answer.valid_until - self._now()).total_seconds()
            ttl = max(0.0, min(remaining, config.max_age))
        loaded = CrlLoad(url, index=attempt.answer, latency=attempt.latency, shared=attempt.shared)
        return Loaded(loaded, ttl, signed=attempt.signed)

    def _life_end(self, index: CrlIndex) -> dt.datetime:
        """Counted from the CRL's own signed thisUpdate, at most crl_cache_max_age."""
        return min(
            index.valid_until, index.this_update + dt.timedelta(seconds=self._config.max_age)
        )

    def _fresh(self, index: CrlIndex) -> bool:
        """A shared CRL is used while in the first REFRESH_AT of its life."""
        life = self._life_end(index) - index.this_update
        return self._now() < index.this_update + REFRESH_AT * life
