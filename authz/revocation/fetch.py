"""Fetching OCSP responses over HTTP with one shared aiohttp session.

GET with the base64 request in the path when it fits in 255 bytes (RFC 5019, cache friendly), else
POST. Only HTTP 200 counts; no redirects; the body is capped; one total timeout covers connecting,
sending and a responder that trickles bytes. Every failure becomes an OcspError.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Protocol
from urllib.parse import quote, urlsplit

import aiohttp

from authz.revocation.ocsp_verify import OcspError, OcspFailure

# Real responses are 1–3 KB (with a delegated signer certificate); 64 KiB is generous.
MAX_RESPONSE_BYTES = 64 * 1024
MAX_GET_REQUEST_CHARS = 255
DEFAULT_RESPONDER_CONCURRENCY = 32


class Fetcher(Protocol):
    async def fetch(self, url: str, request_der: bytes) -> bytes:
        """The response body; raises OcspError for anything but a 200 with a bounded body."""
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

    async def fetch(self, url: str, request_der: bytes) -> bytes:
        label = responder_label(url)
        limit = self._limits.setdefault(label, asyncio.Semaphore(self._per_responder))
        async with limit:
            return await self._fetch(url, request_der)

    async def _fetch(self, url: str, request_der: bytes) -> bytes:
        target = get_url(url, request_der)
        if target is not None:
            request = self._session.get(target, allow_redirects=False, timeout=self._timeout)
        else:
            request = self._session.post(
                url,
                data=request_der,
                headers={"Content-Type": "application/ocsp-request"},
                allow_redirects=False,
                timeout=self._timeout,
            )
        try:
            # aiohttp's own timeout, and this one around the body read as well.
            async with asyncio.timeout(self._timeout.total):
                return await self._read(request)
        except TimeoutError:
            raise OcspError(OcspFailure.TIMEOUT, f"no answer from {url} in time") from None
        except aiohttp.ClientError as e:
            raise OcspError(OcspFailure.NETWORK, f"{url}: {type(e).__name__}: {e}") from None
        except OSError as e:
            raise OcspError(OcspFailure.NETWORK, f"{url}: {e}") from None

    @staticmethod
    async def _read(request: aiohttp.client._RequestContextManager) -> bytes:
        async with request as response:
            if response.status != 200:
                raise OcspError(OcspFailure.HTTP_ERROR, f"HTTP {response.status}")
            if (response.content_length or 0) > MAX_RESPONSE_BYTES:
                raise OcspError(OcspFailure.TOO_LARGE, f"{response.content_length} bytes announced")
            body = bytearray()
            async for chunk in response.content.iter_chunked(16 * 1024):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise OcspError(OcspFailure.TOO_LARGE, f"more than {MAX_RESPONSE_BYTES} bytes")
            return bytes(body)
