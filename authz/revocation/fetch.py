"""Fetching OCSP responses over HTTP with one shared aiohttp session.

GET with the base64 request in the path when it fits in 255 bytes (RFC 5019, cache friendly), else
POST. Only HTTP 200 counts; no redirects; the body is capped; one total timeout covers connecting,
sending and a responder that trickles bytes. Every failure becomes an RevocationError.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp

from authz.core.revocation import RevocationError, RevocationFailure

# Real responses are 1–3 KB (with a delegated signer certificate); 64 KiB is generous.
MAX_RESPONSE_BYTES = 64 * 1024
MAX_GET_REQUEST_CHARS = 255
DEFAULT_RESPONDER_CONCURRENCY = 32


class Fetcher(Protocol):
    async def fetch(self, url: str, request_der: bytes) -> bytes:
        """The response body; raises RevocationError for anything but a 200 with a bounded body."""
        ...

    def unusable(self, url: str) -> None:
        """The body fetched from `url` did not verify: counts as a failure of that source."""
        ...


def responder_label(url: str) -> str:
    """`host:port` of a responder URL: the key for concurrency limits (and metric labels)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def get_url(url: str, request_der: bytes) -> str | None:
    """The GET URL for this request, or None when the encoded request is too long for GET."""
    encoded = quote(base64.b64encode(request_der).decode("ascii"), safe="")
    if len(encoded) > MAX_GET_REQUEST_CHARS:
        return None
    return url.rstrip("/") + "/" + encoded


# A responder that fails this many times in a row is not asked again for BREAKER_OPEN_SECONDS;
# then one request probes it, and success closes the breaker.
BREAKER_FAILURES = 5
BREAKER_OPEN_SECONDS = 10.0
_TRANSPORT_FAILURES = frozenset(
    {
        RevocationFailure.TIMEOUT,
        RevocationFailure.NETWORK,
        RevocationFailure.HTTP_ERROR,
        RevocationFailure.TOO_LARGE,
    }
)


class CircuitBreaker:
    """Fails fast while a responder is down, so Checks do not each wait for its timeout."""

    def __init__(
        self,
        failures: int = BREAKER_FAILURES,
        open_seconds: float = BREAKER_OPEN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    def allow(self) -> bool:
        """True if a request may go out now (closed, or the one probe of a half-open breaker)."""
        if self._failures < self._threshold:
            return True
        if self._clock() < self._open_until or self._probing:
            return False
        self._probing = True
        return True

    def record(self, ok: bool) -> None:
        self._probing = False
        if ok:
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._open_seconds


class HttpFetcher:
    """aiohttp fetcher; the session is injected and owned by whoever created it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout: float,
        per_responder: int = DEFAULT_RESPONDER_CONCURRENCY,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._per_responder = per_responder
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._breakers: dict[str, CircuitBreaker] = {}

    async def fetch(self, url: str, request_der: bytes) -> bytes:
        """An OCSP response for `request_der` (GET when it fits, else POST)."""
        target = get_url(url, request_der)
        if target is not None:
            return await self._guarded(
                url, lambda: self._session.get(target, **self._options()), MAX_RESPONSE_BYTES
            )
        return await self._guarded(
            url,
            lambda: self._session.post(
                url,
                data=request_der,
                headers={"Content-Type": "application/ocsp-request"},
                **self._options(),
            ),
            MAX_RESPONSE_BYTES,
        )

    async def get(self, url: str, max_bytes: int) -> bytes:
        """A plain GET (a CRL), with the same limits, breaker and failures as OCSP."""
        return await self._guarded(
            url, lambda: self._session.get(url, **self._options()), max_bytes
        )

    def unusable(self, url: str) -> None:
        """A 200 whose body did not verify: the source is failing as surely as a 500 would."""
        self._breakers.setdefault(responder_label(url), CircuitBreaker()).record(False)

    def _options(self) -> dict[str, Any]:
        return {"allow_redirects": False, "timeout": self._timeout}

    async def _guarded(
        self, url: str, request: Callable[[], aiohttp.client._RequestContextManager], max_bytes: int
    ) -> bytes:
        """One request through the responder's breaker and concurrency limit."""
        label = responder_label(url)
        breaker = self._breakers.setdefault(label, CircuitBreaker())
        if not breaker.allow():
            raise RevocationError(
                RevocationFailure.CIRCUIT_OPEN, f"{label} failed repeatedly; not asked now"
            )
        limit = self._limits.setdefault(label, asyncio.Semaphore(self._per_responder))
        try:
            async with limit:
                body = await self._send(url, request, max_bytes)
        except RevocationError as error:
            breaker.record(error.failure not in _TRANSPORT_FAILURES)
            raise
        except BaseException:
            breaker.record(True)  # cancelled: says nothing about the responder
            raise
        breaker.record(True)
        return body

    async def _send(
        self, url: str, request: Callable[[], aiohttp.client._RequestContextManager], max_bytes: int
    ) -> bytes:
        try:
            # aiohttp's own timeout, and this one around the body read as well.
            async with asyncio.timeout(self._timeout.total):
                return await self._read(request(), max_bytes)
        except TimeoutError:
            raise RevocationError(
                RevocationFailure.TIMEOUT, f"no answer from {url} in time"
            ) from None
        except aiohttp.ClientError as e:
            raise RevocationError(
                RevocationFailure.NETWORK, f"{url}: {type(e).__name__}: {e}"
            ) from None
        except OSError as e:
            raise RevocationError(RevocationFailure.NETWORK, f"{url}: {e}") from None

    @staticmethod
    async def _read(request: aiohttp.client._RequestContextManager, max_bytes: int) -> bytes:
        async with request as response:
            if response.status != 200:
                raise RevocationError(RevocationFailure.HTTP_ERROR, f"HTTP {response.status}")
            if (response.content_length or 0) > max_bytes:
                raise RevocationError(
                    RevocationFailure.TOO_LARGE, f"{response.content_length} bytes announced"
                )
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise RevocationError(
                        RevocationFailure.TOO_LARGE, f"more than {max_bytes} bytes"
                    )
            return bytes(body)
