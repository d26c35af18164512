"""What OCSP and CRL sources do alike: choose the URL to ask, refuse URLs a certificate may not
make us fetch, and fetch → verify with every failure turned into the source's own failure.

One allow-list for every URL a certificate names (its AIA OCSP URL, its CRL distribution
points), applied before any connection: URLs the operator configured always; any other only if
`allowed_hosts` is empty or admits its host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz.core.memo import ByIdentity
from authz.core.names import NameKey, name_key
from authz.core.revocation import RevocationError, RevocationFailure
from authz.revocation.fetch import Body
from authz.revocation.shared import Claim, SharedAnswers, SharedKey, Unavailable

A = TypeVar("A")


class Observer(Protocol):
    """Where sources count what they do (the service's metrics)."""

    def observe_revocation_fetch(self, source: str, url: str, outcome: str, seconds: float) -> None:
        """One fetch of `source` ("ocsp" or "crl"): a status, "loaded", or a failure."""
        ...

    def observe_cache_lookup(self, result: str) -> None: ...


_FINGERPRINTS: ByIdentity[x509.Certificate, bytes] = ByIdentity(1024)


def issuer_fingerprint(issuer: x509.Certificate) -> bytes:
    """SHA-256 of the issuer certificate: part of every cache key, and how reload prunes them."""
    known = _FINGERPRINTS.get(issuer)
    if known is not None:
        return known
    return _FINGERPRINTS.put(issuer, issuer.fingerprint(hashes.SHA256()))


SHARED_KEY_PREFIX = "mtls-authz:v1"


def shared_key(source: str, *parts: str) -> str:
    """The shared cache's key for one answer: the source, what identifies the answer, and a
    digest of the URL asked (as in the process's own cache: answers of another responder are
    never served)."""
    *identity, url = parts
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return ":".join((SHARED_KEY_PREFIX, source, *identity, digest))


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


class SourceUrls:
    """Where one source asks about a certificate: the URL the operator configured for its
    issuer, else the first the certificate names; and whether a URL may be fetched at all."""

    def __init__(self, overrides: Mapping[NameKey, str], allowed_hosts: tuple[str, ...]) -> None:
        self._overrides = dict(overrides)
        self._allowed_hosts = allowed_hosts
        self.configured = frozenset(self._overrides.values())

    def choose(self, leaf: x509.Certificate, named: Iterable[str]) -> str | None:
        """The configured URL for the leaf's issuer, else the first of those it names."""
        return self._overrides.get(name_key(leaf.issuer)) or next(iter(named), None)

    def configured_for(self, issuer: x509.Certificate) -> str | None:
        """The URL the operator configured for certificates of `issuer`, if any."""
        return self._overrides.get(name_key(issuer.subject))

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


@dataclass(frozen=True, slots=True)
class Attempt(Generic[A]):
    """One fetch → verify: the verified answer and the signed bytes it came from, or the error."""

    answer: A | None
    error: RevocationError | None
    signed: Body
    latency: float
    shared: bool = False
    """Read from the shared cache (another replica fetched it), not from the source."""


def verification_failure(error: Exception) -> RevocationError:
    """Anything but RevocationError raised while verifying an answer (cryptography refusing a
    hostile field, say) is a failure of the source that sent it, never an error of the Check."""
    return RevocationError(
        RevocationFailure.UNPARSABLE,
        f"the answer cannot be verified ({type(error).__name__}: {error})",
    )


class SourceLoader:
    """Fetch → verify for one kind of source, the same way for OCSP and CRLs."""

    def __init__(
        self,
        source: str,
        urls: SourceUrls,
        unusable: Callable[[str], None],
        observer: Observer | None,
        shared: SharedAnswers | None = None,
        fetch_timeout: float = 0.0,
    ) -> None:
        self._shared = shared
        self._fetch_timeout = fetch_timeout
        self._source = source
        self._urls = urls
        self._unusable = unusable
        self._observer = observer
        self._log = logging.getLogger(f"authz.{source}")

    async def load(
        self,
        url: str,
        fetch: Callable[[], Awaitable[Body]],
        verify: Callable[[Body], Awaitable[A]],
        outcome: Callable[[A], str],
        log_fields: Mapping[str, object],
        shared: SharedKey[A] | None = None,
    ) -> Attempt[A]:
        """With a shared cache: its answer if one verifies and is fresh; else one replica asks
        the source (the others wait for its answer), and stores what verified. The shared cache
        is only read for a permitted URL, and its answers never count against the source."""
        store = self._shared
        if store is None or shared is None or not self._urls.permitted(url):
            return await self._fetch(url, fetch, verify, outcome, log_fields)
        started = time.monotonic()
        began = store.clock()
        stored = await store.find(shared, verify)
        if isinstance(stored, Unavailable):  # one timeout is all this answer waits on the store
            return await self._fetch(url, fetch, verify, outcome, log_fields)
        if stored is not None:
            return Attempt(stored[0], None, stored[1], time.monotonic() - started, shared=True)
        claim = await store.claim(shared)
        try:
            found = None
            if claim is Claim.THEIRS:
                until = store.wait_until(began, self._fetch_timeout)
                found = await store.wait_for(shared, verify, until)
            elif claim is Claim.OURS:
                found = await store.recheck(shared, verify)
            if found is not None:
                latency = time.monotonic() - started
                return Attempt(found[0], None, found[1], latency, shared=True)
            attempt = await self._fetch(url, fetch, verify, outcome, log_fields)
            if attempt.answer is not None and claim is not Claim.NONE:
                await store.share(shared, attempt.signed, attempt.answer)
            return attempt
        finally:
            if claim is Claim.OURS:
                await store.release(shared)

    async def _fetch(
        self,
        url: str,
        fetch: Callable[[], Awaitable[Body]],
        verify: Callable[[Body], Awaitable[A]],
        outcome: Callable[[A], str],
        log_fields: Mapping[str, object],
    ) -> Attempt[A]:
        """`fetch` runs only for a permitted URL; an answer `verify` refuses (for any reason)
        counts against the source's circuit breaker, as an unreachable source would."""
        started = time.monotonic()
        try:
            if not self._urls.permitted(url):
                raise RevocationError(
                    RevocationFailure.RESPONDER_NOT_ALLOWED,
                    f"{url} is not in revocation_allowed_hosts",
                )
            body = await fetch()
            try:
                answer = await verify(body)
            except Exception as error:
                if isinstance(error, RevocationError):
                    if error.failure is not RevocationFailure.WEAK_SIGNATURE:  # not a fault
                        self._unusable(url)  # of the source's health: its signer is weak
                    raise
                self._unusable(url)
                raise verification_failure(error) from None
        except RevocationError as error:
            latency = time.monotonic() - started
            self._log.warning(
                f"{self._source.upper()} check failed",
                extra={
                    **log_fields,
                    f"{self._source}_outcome": error.failure.value,
                    "detail": error.detail,
                    f"{self._source}_latency": round(latency, 6),
                },
            )
            self._observe(url, error.failure.value, latency)
            return Attempt(None, error, b"", latency)
        latency = time.monotonic() - started
        self._observe(url, outcome(answer), latency)
        return Attempt(answer, None, body, latency)

    def _observe(self, url: str, outcome: str, seconds: float) -> None:
        if self._observer is not None:
            self._observer.observe_revocation_fetch(self._source, url, outcome, seconds)
