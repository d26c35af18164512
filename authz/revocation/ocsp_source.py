"""OCSP as a revocation source: cache → fetch → verify → cache.

Knows where to ask (the certificate's AIA, or a per-issuer override) and how long an answer may be
kept; knows nothing of policy modes or responses to Envoy (see `authz.core.authorizer`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cryptography import x509

from authz.core.memo import ByIdentity
from authz.core.names import NameKey
from authz.core.revocation import CertStatus, Lookup, RevocationOutcome, RevocationStatus
from authz.revocation.cache import Loaded, SingleFlightCache
from authz.revocation.compact import OutcomeCodec, cache_key, key_parts
from authz.revocation.fetch import Body, Fetcher
from authz.revocation.loading import (
    Observer,
    SourceLoader,
    SourceUrls,
    issuer_fingerprint,
    shared_key,
)
from authz.revocation.ocsp import (
    CertId,
    OcspQuery,
    aia_ocsp_urls,
    build_query,
    build_query_by_hash,
    verify_response,
)
from authz.revocation.shared import REFRESH_AT, SharedAnswers, SharedKey

URL_MEMO_SIZE = 4096

# (CertID hash algorithm, issuer certificate fingerprint, serial, responder URL), packed into one
# int (authz.revocation.compact). The issuer certificate fixes both the issuer name hash and key
# hash, so this identifies the same thing as the CertID; the URL keeps an answer from being served
# once configuration picks another responder.
CacheKey = int


def new_cache(max_entries: int) -> SingleFlightCache[CacheKey, RevocationOutcome]:
    """The OCSP cache, its entries packed (≈ 200 bytes per answer)."""
    return SingleFlightCache(max_entries, codec=OutcomeCodec())


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
    timeout: float = 2.0
    """Seconds one request to the responder may take."""
    allow_sha1: bool = False
    """Accept SHA-1 signatures on answers and delegated responder certificates."""
    unknown_ttl: float = 5.0
    """Longest an `unknown` is kept (here and in the shared cache): a responder says it for a
    certificate issued a moment ago, until its index catches up."""


class OcspChecker:
    names = "OCSP responder"

    def __init__(
        self,
        fetcher: Fetcher,
        cache: SingleFlightCache[CacheKey, RevocationOutcome],
        config: OcspConfig,
        observer: Observer | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        shared: SharedAnswers | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._observer = observer
        self._cache = cache
        self._config = config
        self._now = now
        self.urls = SourceUrls(config.overrides or {}, config.allowed_hosts)
        self._loader = SourceLoader(
            "ocsp", self.urls, fetcher.unusable, observer, shared, config.timeout
        )
        self._urls: ByIdentity[x509.Certificate, str | None] = ByIdentity(URL_MEMO_SIZE)
        self._keys: ByIdentity[x509.Certificate, tuple[str, bytes, CacheKey]] = ByIdentity(
            URL_MEMO_SIZE
        )
        # Issuers seen, by fingerprint, with their CertID hashes: what prefetch needs.
        self._issuers: dict[bytes, tuple[x509.Certificate, CertId]] = {}

    @property
    def cache(self) -> SingleFlightCache[CacheKey, RevocationOutcome]:
        return self._cache

    def source_url(self, leaf: x509.Certificate) -> str | None:
        return self.responder_url(leaf)

    def responder_url(self, leaf: x509.Certificate) -> str | None:
        """The configured override for the leaf's issuer, else the first AIA OCSP URL."""
        known = self._urls.get(leaf)
        if known is not None:
            return known
        return self._urls.put(leaf, self.urls.choose(leaf, aia_ocsp_urls(leaf)))

    async def check(
        self, leaf: x509.Certificate, issuer: x509.Certificate, url: str
    ) -> tuple[RevocationOutcome, Lookup]:
        config = self._config
        fingerprint = issuer_fingerprint(issuer)
        known = self._keys.get(leaf)
        if known is not None and known[0] == url and known[1] is fingerprint:
            key = known[2]
        else:
            key = cache_key(config.hash_name, fingerprint, leaf.serial_number, url)
            self._keys.put(leaf, (url, fingerprint, key))

        def load() -> Awaitable[Loaded[RevocationOutcome]]:
            query = build_query(leaf, issuer, config.hash_name, config.nonce)
            self._issuers[fingerprint] = (issuer, query.cert_id)
            held = self._cache.peek(key)  # a refresh: the answer it replaces
            return self._load(query, issuer, url, leaf.not_valid_after_utc, held)

        outcome, lookup = await self._cache.get(key, load)
        if self._observer is not None:
            self._observer.observe_cache_lookup(lookup.value)
        return outcome, lookup

    def prefetch(
        self, key: CacheKey, outcome: RevocationOutcome
    ) -> Callable[[], Awaitable[Loaded[RevocationOutcome]]] | None:
        """A loader that asks again about a cached certificate without the certificate itself
        (the issuer's CertID hashes are remembered): for the prefetcher. None for answers that
        need no refresh (revoked stays revoked), an issuer no longer known, or a responder the
        configuration no longer picks."""
        if outcome.status is None or outcome.status.status is CertStatus.REVOKED:
            return None
        parts = key_parts(key)
        known = self._issuers.get(parts.issuer_fingerprint)
        if known is None or parts.hash_name != self._config.hash_name:
            return None
        issuer, cert_id = known
        if not self.urls.still_picks(issuer, parts.url):
            return None
        query = build_query_by_hash(cert_id, parts.serial, self._config.nonce)
        return lambda: self._load(query, issuer, parts.url, None, outcome)

    async def _load(
        self,
        query: OcspQuery,
        issuer: x509.Certificate,
        url: str,
        leaf_not_after: dt.datetime | None,
        held: RevocationOutcome | None = None,
    ) -> Loaded[RevocationOutcome]:
        """`held`: the answer a refresh replaces; a shared answer must then be newer."""
        config = self._config
        held_since = held.status.this_update if held is not None and held.status else None

        def fresh(status: RevocationStatus) -> bool:
            newer = held_since is None or status.this_update > held_since
            return newer and self._fresh(status)

        async def verify(body: Body) -> RevocationStatus:  # a few hundred µs: on the loop
            return verify_response(
                bytes(body),
                query,
                issuer,
                self._now(),
                skew=dt.timedelta(seconds=config.skew),
                max_age=dt.timedelta(seconds=config.max_age),
                max_response_age=config.max_response_age,
                allow_sha1=config.allow_sha1,
            )

        cert_id = query.cert_id
        # With a nonce, an answer is good for its request alone: nothing to share.
        shared = None if query.nonce is not None else SharedKey(
            shared_key("ocsp", cert_id.hash_algorithm, issuer_fingerprint(issuer).hex(),
                       format(cert_id.serial_number, "x"), url),
            fresh,
            lambda status: self._shared_ttl(status, leaf_not_after),
        )  # fmt: skip
        attempt = await self._loader.load(
            url,
            lambda: self._fetcher.fetch(url, query.der),
            verify,
            lambda status: status.status.value,
            {"responder": url, "serial": format(cert_id.serial_number, "x")},
            shared,
        )
        if attempt.answer is None:
            assert attempt.error is not None
            outcome = RevocationOutcome.failed(url, attempt.error, attempt.latency)
            return Loaded(outcome, config.failure_ttl, definitive=False)
        outcome = RevocationOutcome(
            url, status=attempt.answer, latency=attempt.latency, shared=attempt.shared
        )
        ttl = (
            self._shared_ttl(attempt.answer, leaf_not_after)
            if attempt.shared
            else self._ttl(attempt.answer, leaf_not_after)
        )
        return Loaded(outcome, ttl, signed=attempt.signed)

    def _life_end(self, status: RevocationStatus) -> dt.datetime:
        """When a good or unknown answer stops being servable, counted from its own signed
        thisUpdate: nextUpdate (or thisUpdate + max_age without one), at most thisUpdate +
        ocsp_cache_max_age."""
        return min(
            status.valid_until, status.this_update + dt.timedelta(seconds=self._config.max_age)
        )

    def _fresh(self, status: RevocationStatus) -> bool:
        """A shared answer is served while in the first REFRESH_AT of its life (then one replica
        asks the responder again); revoked stays revoked."""
        if status.status is CertStatus.REVOKED:
            return True
        life = self._life_end(status) - status.this_update
        return self._now() < status.this_update + REFRESH_AT * life

    def _shared_ttl(self, status: RevocationStatus, leaf_not_after: dt.datetime | None) -> float:
        if status.status is CertStatus.REVOKED:
            return self._ttl(status, leaf_not_after)
        life = max(0.0, (self._life_end(status) - self._now()).total_seconds())
        if status.status is CertStatus.UNKNOWN:
            return min(life, self._config.unknown_ttl)
        return life

    def _ttl(self, status: RevocationStatus, leaf_not_after: dt.datetime | None) -> float:
        """How long an answer may be served: this bounds how long a revocation goes unseen.
        Revoked stays until the certificate expires (when known; else for max_age)."""
        now = self._now()
        if status.status is CertStatus.REVOKED:
            if leaf_not_after is None:
                return self._config.max_age
            return max(0.0, (leaf_not_after - now).total_seconds())
        remaining = (status.valid_until - now).total_seconds()
        if status.status is CertStatus.UNKNOWN:
            return max(0.0, min(remaining, self._config.unknown_ttl))
        return max(0.0, min(remaining, self._config.max_age))
