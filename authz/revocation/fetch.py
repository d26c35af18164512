"""Fetching OCSP responses over HTTP with one shared aiohttp session.

GET with the base64 request in the path when it fits in 255 bytes (RFC 5019, cache friendly), else
POST. Only HTTP 200 counts; no redirects; the body is capped; one total timeout covers connecting,
sending and a responder that trickles bytes. Every failure becomes an RevocationError.
"""

from __future__ import annotations

import asyncio
import base64
import math
import mmap
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp

from authz.core.revocation import RevocationError, RevocationFailure

# Real responses are 1–3 KB (with a delegated signer certificate); 64 KiB is generous.
MAX_RESPONSE_BYTES = 64 * 1024
MAX_GET_REQUEST_CHARS = 255
PACE_STEP = 0.005
"""A paced read sleeps once it is this far ahead of its pace."""
SPILL_BYTES = 1024 * 1024
"""A body past this size is gathered in memory mapped as it arrives, never copied whole."""

Body = bytes | memoryview
"""A body as read: bytes, or past SPILL_BYTES a read-only view of the mapped memory it arrived
in (joining tens of MB would hold the event loop for tens of ms)."""
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
        pace: float = math.inf,
    ) -> None:
        """`pace`: most bytes per second a body is read at (a CRL: its reading costs the event
        loop ~2 ms a MB, so tens of MB read at loopback speed would hold Checks back)."""
        self._session = session
        self._pace = pace
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._per_responder = per_responder
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._breakers: dict[str, CircuitBreaker] = {}

    async def fetch(self, url: str, request_der: bytes) -> bytes:
        """An OCSP response for `request_der` (GET when it fits, else POST)."""
        target = get_url(url, request_der)
        if target is not None:
            return bytes(  # never more than MAX_RESPONSE_BYTES: bytes, as read
                await self._guarded(
                    url, lambda: self._session.get(target, **self._options()), MAX_RESPONSE_BYTES
                )
            )
        body = await self._guarded(
            url,
            lambda: self._session.post(
                url,
                data=request_der,
                headers={"Content-Type": "application/ocsp-request"},
                **self._options(),
            ),
            MAX_RESPONSE_BYTES,
        )
        return bytes(body)

    async def get(self, url: str, max_bytes: int) -> Body:
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
    ) -> Body:
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
    ) -> Body:
        try:
            # aiohttp's own timeout, and this one around the body read as well.
            async with asyncio.timeout(self._timeout.total):
                return await self._read(request(), max_bytes, self._pace)
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
    async def _read(
        request: aiohttp.client._RequestContextManager, max_bytes: int, pace: float = math.inf
    ) -> Body:
        async with request as response:
            if response.status != 200:
                raise RevocationError(RevocationFailure.HTTP_ERROR, f"HTTP {response.status}")
            if (response.content_length or 0) > max_bytes:
                raise RevocationError(
                    RevocationFailure.TOO_LARGE, f"{response.content_length} bytes announced"
                )
            body = _Gathered(min(response.content_length or max_bytes, max_bytes))
            started = time.monotonic()
            async for chunk in response.content.iter_chunked(64 * 1024):
                if body.size + len(chunk) > max_bytes:
                    raise RevocationError(
                        RevocationFailure.TOO_LARGE, f"more than {max_bytes} bytes"
                    )
                body.add(chunk)
                ahead = body.size / pace - (time.monotonic() - started)
                if ahead > PACE_STEP:  # unread bytes wait in the socket meanwhile
                    await asyncio.sleep(ahead)
            return body.result()


class _Gathered:
    """A body as it arrives: chunks, moved into anonymous mapped memory of the size announced
    (else the most allowed: only the pages written are ever backed) once past SPILL_BYTES."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._chunks: list[bytes] = []
        self._mapped: mmap.mmap | None = None
        self.size = 0

    def add(self, chunk: bytes) -> None:
        if self._mapped is None and self.size + len(chunk) > SPILL_BYTES:
            self._mapped = mmap.mmap(-1, max(self._capacity, self.size + len(chunk)))
            self._mapped[: self.size] = b"".join(self._chunks)
            self._chunks = []
        if self._mapped is None:
            self._chunks.append(chunk)
        else:
            if self.size + len(chunk) > len(self._mapped):
                raise RevocationError(
                    RevocationFailure.TOO_LARGE, f"more than the {len(self._mapped)} announced"
                )
            self._mapped[self.size : self.size + len(chunk)] = chunk
        self.size += len(chunk)

    def result(self) -> Body:
        if self._mapped is None:
            return b"".join(self._chunks)
        return memoryview(self._mapped)[: self.size].toreadonly()
