"""Revocation status of a leaf: cache → fetch → verify → cache.

Knows where to ask (the certificate's AIA, or a per-issuer override) and how long an answer may be
kept; knows nothing of policy modes or responses to Envoy (see `authz.core.authorizer`).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz.core.names import NameKey, name_key
from authz.revocation.cache import Loaded, Lookup, SingleFlightCache
from authz.revocation.fetch import Fetcher
from authz.revocation.ocsp import (
    CertId,
    CertStatus,
    OcspError,
    OcspFailure,
    OcspQuery,
    OcspStatus,
    build_query,
    build_query_by_hash,
    verify_response,
)
from authz.service.metrics import Metrics

log = logging.getLogger("authz.ocsp")

ALLOWED_SCHEMES = ("http://", "https://")
URL_MEMO_SIZE = 4096

# (CertID hash algorithm, issuer certificate fingerprint, serial, responder URL). The issuer
# certificate fixes both the issuer name hash and key hash, so this identifies the same thing as
# the CertID; the URL keeps an answer from being served once configuration picks another responder.
CacheKey = tuple[str, bytes, int, str]


@dataclass(frozen=True, slots=True)
class OcspOutcome:
    """Either a verified status or the reason there is none."""

    responder: str
    status: OcspStatus | None = None
    error: OcspError | None = None
    latency: float = 0.0


@dataclass(frozen=True)
class OcspConfig:
    hash_name: str = "sha1"
    nonce: bool = False
    skew: float = 300.0
    max_age: float = 300.0
    failure_ttl: float = 5.0
    overrides: Mapping[NameKey, str] | None = None
    allowed_hosts: tuple[str, ...] = ()
    """Where an AIA URL may point (names, addresses, CIDR networks); empty allows any."""
    max_response_age: float = 0.0
    """How old an answer's thisUpdate may be, in seconds; 0: no bound but nextUpdate."""


@functools.lru_cache(maxsize=1024)
def issuer_fingerprint(issuer: x509.Certificate) -> bytes:
    """SHA-256 of the issuer certificate: part of the cache key, and how reload prunes it."""
    return issuer.fingerprint(hashes.SHA256())


def aia_ocsp_urls(cert: x509.Certificate) -> list[str]:
    """http(s) OCSP URLs from the AIA extension, in order; other schemes are ignored."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        d.access_location.value
        for d in aia
        if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and d.access_location.value.lower().startswith(ALLOWED_SCHEMES)
    ]


class SourceUrls:
    """Where to ask about a certificate, for one revocation source (OCSP or CRL): the URL the
    operator configured for its issuer, else the first the certificate names; and the one
    allow-list for every URL a certificate can make mtls-authz fetch, applied before any
    connection (configured URLs always; any other only if `allowed_hosts` admits its host)."""

    def __init__(self, overrides: Mapping[NameKey, str], allowed_hosts: tuple[str, ...]) -> None:
        self._overrides = dict(overrides)
        self._allowed_hosts = allowed_hosts
        self.configured = frozenset(self._overrides.values())

    def choose(self, leaf: x509.Certificate, named: Iterable[str]) -> str | None:
        """The configured URL for the leaf's issuer, else the first of those it names."""
        return self._overrides.get(name_key(leaf.issuer)) or next(iter(named), None)

    def permitted(self, url: str) -> bool:
        if not self._allowed_hosts or url in self.configured:
            return True
        return host_allowed(urlsplit(url).hostname or "", self._allowed_hosts)

    def still_picks(self, issuer: x509.Certificate, url: str) -> bool:
        """Whether this configuration could still ask `url` about a certificate of `issuer`: the
        issuer's configured URL if it has one, else a permitted URL no issuer has configured.
        What a reload keeps and prefetch refreshes."""
        override = self._overrides.get(name_key(issuer.subject))
        if override is not None:
            return url == override
        return url not in self.configured and self.permitted(url)


def verification_failure(error: Exception) -> OcspError:
    """Anything but OcspError raised while verifying an answer (cryptography refusing a hostile
    field, say) is a failure of the source that sent it, never an error of the Check."""
    return OcspError(
        OcspFailure.UNPARSABLE, f"the answer cannot be verified ({type(error).__name__}: {error})"
    )


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Names match exactly (case-insensitive); networks match IP-literal hosts only, since a
    name's address could change between this check and the connection."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in allowed:
        if "/" in entry:
            if address is not None and address in ipaddress.ip_network(entry, strict=False):
                return True
        elif entry.lower().rstrip(".") == host:
            return True
    return False


class OcspChecker:
    def __init__(
        self,
        fetcher: Fetcher,
        cache: SingleFlightCache[CacheKey, OcspOutcome],
        config: OcspConfig,
        metrics: Metrics | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._fetcher = fetcher
        self._metrics = metrics
        self._cache = cache
        self._config = config
        self._now = now
        self.urls = SourceUrls(config.overrides or {}, config.allowed_hosts)
        self._urls: dict[x509.Certificate, str | None] = {}
        # Issuers seen, by fingerprint, with their CertID hashes: what prefetch needs.
        self._issuers: dict[bytes, tuple[x509.Certificate, CertId]] = {}

    @property
    def cache(self) -> SingleFlightCache[CacheKey, OcspOutcome]:
        return self._cache

    def source_url(self, leaf: x509.Certificate) -> str | None:
        return self.responder_url(leaf)

    def responder_url(self, leaf: x509.Certificate) -> str | None:
        """The configured override for the leaf's issuer, else the first AIA OCSP URL."""
        if leaf in self._urls:
            return self._urls[leaf]
        url = self.urls.choose(leaf, aia_ocsp_urls(leaf))
        if len(self._urls) >= URL_MEMO_SIZE:
            self._urls.clear()  # crude but bounded; repeat clients refill it at once
        self._urls[leaf] = url
        return url

    async def check(
        self, leaf: x509.Certificate, issuer: x509.Certificate, url: str
    ) -> tuple[OcspOutcome, Lookup]:
        key: CacheKey = (
            self._config.hash_name,
            issuer_fingerprint(issuer),
            leaf.serial_number,
            url,
        )
        config = self._config

        def load() -> Awaitable[Loaded[OcspOutcome]]:
            query = build_query(leaf, issuer, config.hash_name, config.nonce)
            self._issuers[key[1]] = (issuer, query.cert_id)
            return self._load(query, issuer, url, leaf.not_valid_after_utc)

        outcome, lookup = await self._cache.get(key, load)
        if self._metrics is not None:
            self._metrics.observe_cache_lookup(lookup.value)
        return outcome, lookup

    def prefetch(
        self, key: CacheKey, outcome: OcspOutcome
    ) -> Callable[[], Awaitable[Loaded[OcspOutcome]]] | None:
        """A loader that asks again about a cached certificate without the certificate itself
        (the issuer's CertID hashes are remembered): for the prefetcher. None for answers that
        need no refresh (revoked stays revoked) or an issuer no longer known."""
        if outcome.status is None or outcome.status.status is CertStatus.REVOKED:
            return None
        known = self._issuers.get(key[1])
        if known is None:
            return None
        issuer, cert_id = known
        if not self.urls.still_picks(issuer, key[3]):
            return None
        query = build_query_by_hash(cert_id, key[2], self._config.nonce)
        return lambda: self._load(query, issuer, key[3], None)

    async def _load(
        self,
        query: OcspQuery,
        issuer: x509.Certificate,
        url: str,
        leaf_not_after: dt.datetime | None,
    ) -> Loaded[OcspOutcome]:
        config = self._config
        started = time.monotonic()
        try:
            if not self.urls.permitted(url):
                raise OcspError(
                    OcspFailure.RESPONDER_NOT_ALLOWED, f"{url} is not in ocsp_allowed_hosts"
                )
            body = await self._fetcher.fetch(url, query.der)
            try:
                status = verify_response(
                    body,
                    query,
                    issuer,
                    self._now(),
                    skew=dt.timedelta(seconds=config.skew),
                    max_age=dt.timedelta(seconds=config.max_age),
                    max_response_age=config.max_response_age,
                )
            except Exception as error:
                # The responder answered, but not usably: its breaker counts that.
                self._fetcher.unusable(url)
                if isinstance(error, OcspError):
                    raise
                raise verification_failure(error) from None
        except OcspError as error:
            latency = time.monotonic() - started
            fields = {
                "responder": url,
                "ocsp_outcome": error.failure.value,
                "detail": error.detail,
                "serial": format(query.cert_id.serial_number, "x"),
                "ocsp_latency": round(latency, 6),
            }
            log.warning("OCSP check failed", extra=fields)
            self._observe(url, error.failure.value, latency)
            outcome = OcspOutcome(url, error=error, latency=latency)
            return Loaded(outcome, config.failure_ttl, definitive=False)
        latency = time.monotonic() - started
        self._observe(url, status.status.value, latency)
        outcome = OcspOutcome(url, status=status, latency=latency)
        return Loaded(outcome, self._ttl(status, leaf_not_after))

    def _observe(self, url: str, outcome: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.observe_ocsp_request(url, outcome, seconds)

    def _ttl(self, status: OcspStatus, leaf_not_after: dt.datetime | None) -> float:
        """How long an answer may be served: this bounds how long a revocation goes unseen.
        Revoked stays until the certificate expires (when known; else for max_age)."""
        now = self._now()
        if status.status is CertStatus.REVOKED:
            if leaf_not_after is None:
                return self._config.max_age
            return max(0.0, (leaf_not_after - now).total_seconds())
        remaining = (status.valid_until - now).total_seconds()
        return max(0.0, min(remaining, self._config.max_age))
