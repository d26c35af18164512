"""Revocation status from CRLs: cache → fetch → verify → cache, one CRL per issuer and URL.

A CRL is downloaded once and kept (indexed by serial) until its nextUpdate, at most
`max_age`; a hit past 80 % of that refreshes it in the background, so once loaded no request
waits on a download, and a failed refresh keeps the CRL still valid.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cryptography import x509

from authz.core.names import NameKey
from authz.revocation.cache import Loaded, Lookup, SingleFlightCache
from authz.revocation.crl import CrlIndex, crl_urls, verify_crl
from authz.revocation.fetch import HttpFetcher
from authz.revocation.ocsp import OcspError, OcspFailure
from authz.revocation.ocsp_source import (
    OcspOutcome,
    SourceUrls,
    issuer_fingerprint,
    verification_failure,
)
from authz.service.metrics import Metrics

log = logging.getLogger("authz.crl")

MAX_CRL_BYTES = 16 * 1024 * 1024
CrlKey = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class CrlLoad:
    """A verified CRL, or why there is none."""

    url: str
    index: CrlIndex | None = None
    error: OcspError | None = None
    latency: float = 0.0


@dataclass(frozen=True)
class CrlConfig:
    skew: float = 300.0
    max_age: float = 3600.0
    failure_ttl: float = 5.0
    overrides: Mapping[NameKey, str] | None = None
    allowed_hosts: tuple[str, ...] = ()
    """Where a distribution point may point: the same list as for OCSP (ocsp_allowed_hosts)."""


class CrlChecker:
    def __init__(
        self,
        fetcher: HttpFetcher,
        cache: SingleFlightCache[CrlKey, CrlLoad],
        config: CrlConfig,
        metrics: Metrics | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._fetcher = fetcher
        self._cache = cache
        self._config = config
        self._metrics = metrics
        self._now = now
        self.urls = SourceUrls(config.overrides or {}, config.allowed_hosts)
        self._issuers: dict[bytes, x509.Certificate] = {}

    def source_url(self, leaf: x509.Certificate) -> str | None:
        """The configured CRL for the leaf's issuer, else the first http(s) distribution point."""
        return self.urls.choose(leaf, crl_urls(leaf))

    async def check(
        self, leaf: x509.Certificate, issuer: x509.Certificate, url: str
    ) -> tuple[OcspOutcome, Lookup]:
        fingerprint = issuer_fingerprint(issuer)
        self._issuers[fingerprint] = issuer
        loaded, lookup = await self._cache.get((url, fingerprint), lambda: self._load(issuer, url))
        if loaded.index is None:
            return OcspOutcome(url, error=loaded.error, latency=loaded.latency), lookup
        status = loaded.index.status(leaf.serial_number)
        return OcspOutcome(url, status=status, latency=loaded.latency), lookup

    def prefetch(
        self, key: CrlKey, loaded: CrlLoad
    ) -> Callable[[], Awaitable[Loaded[CrlLoad]]] | None:
        """A loader that downloads the CRL again, for the prefetcher."""
        issuer = self._issuers.get(key[1])
        if issuer is None or not self.urls.still_picks(issuer, key[0]):
            return None
        return lambda: self._load(issuer, key[0])

    async def _load(self, issuer: x509.Certificate, url: str) -> Loaded[CrlLoad]:
        started = time.monotonic()
        try:
            if not self.urls.permitted(url):
                raise OcspError(
                    OcspFailure.RESPONDER_NOT_ALLOWED, f"{url} is not in ocsp_allowed_hosts"
                )
            body = await self._fetcher.get(url, MAX_CRL_BYTES)
            try:
                index = verify_crl(
                    body,
                    issuer,
                    self._now(),
                    skew=dt.timedelta(seconds=self._config.skew),
                    max_age=dt.timedelta(seconds=self._config.max_age),
                )
            except Exception as error:
                self._fetcher.unusable(url)
                if isinstance(error, OcspError):
                    raise
                raise verification_failure(error) from None
        except OcspError as error:
            latency = time.monotonic() - started
            log.warning(
                "CRL check failed",
                extra={"crl": url, "crl_outcome": error.failure.value, "detail": error.detail},
            )
            self._observe(url, f"crl_{error.failure.value}", latency)
            return Loaded(
                CrlLoad(url, error=error, latency=latency), self._config.failure_ttl, False
            )
        latency = time.monotonic() - started
        self._observe(url, "crl_loaded", latency)
        remaining = (index.valid_until - self._now()).total_seconds()
        ttl = max(0.0, min(remaining, self._config.max_age))
        return Loaded(CrlLoad(url, index=index, latency=latency), ttl)

    def _observe(self, url: str, outcome: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.observe_ocsp_request(url, outcome, seconds)
