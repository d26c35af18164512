"""The HTTP fetcher against the project's test responder on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from authz.core.revocation import RevocationError, RevocationFailure
from authz.demo.pki import LabPki
from authz.demo.processes import free_port
from authz.revocation.fetch import (
    MAX_GET_REQUEST_CHARS,
    SPILL_BYTES,
    HttpFetcher,
    get_url,
    responder_label,
)
from authz.revocation.ocsp import build_query
from tests.ocsp_responder import Mode, OcspResponder

TIMEOUT = 1.0


@pytest.fixture
async def fetcher() -> AsyncIterator[HttpFetcher]:
    async with aiohttp.ClientSession() as session:
        yield HttpFetcher(session, TIMEOUT)


def request_der(pki: LabPki, nonce: bool = False) -> bytes:
    return build_query(pki.client("fetch").cert, pki.issuing.cert, with_nonce=nonce).der


async def failure_of(fetcher: HttpFetcher, url: str, der: bytes) -> RevocationFailure:
    with pytest.raises(RevocationError) as info:
        await fetcher.fetch(url, der)
    return info.value.failure


async def test_small_requests_use_get(
    fetcher: HttpFetcher, fresh_responder: OcspResponder, pki: LabPki
) -> None:
    body = await fetcher.fetch(fresh_responder.url, request_der(pki))
    assert body[:1] == b"\x30"
    assert fresh_responder.methods == ["GET"]


async def test_large_requests_use_post(
    fetcher: HttpFetcher, fresh_responder: OcspResponder, pki: LabPki
) -> None:
    # A 200-byte nonce pushes the request past what GET may carry.
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        pki.client("post").cert, pki.issuing.cert, hashes.SHA256()
    )
    der = builder.add_extension(x509.OCSPNonce(b"n" * 200), critical=False).build()
    der_bytes = der.public_bytes(Encoding.DER)
    assert get_url(fresh_responder.url, der_bytes) is None
    body = await fetcher.fetch(fresh_responder.url, der_bytes)
    assert body[:1] == b"\x30"
    assert fresh_responder.methods == ["POST"]


def test_get_url_is_url_encoded_base64_under_the_limit() -> None:
    url = get_url("http://ocsp.example/", b"\xfb\xff" * 10)
    assert url is not None and url.startswith("http://ocsp.example/")
    assert "+" not in url and "/" not in url.removeprefix("http://ocsp.example/")
    assert get_url("http://r", b"\x00" * 200) is None
    assert MAX_GET_REQUEST_CHARS == 255


def test_responder_label() -> None:
    assert responder_label("http://ocsp.lab:8080/x") == "ocsp.lab:8080"
    assert responder_label("https://ocsp.lab/") == "ocsp.lab:443"
    assert responder_label("http://ocsp.lab") == "ocsp.lab:80"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Mode.HTTP_500, RevocationFailure.HTTP_ERROR),
        (Mode.REDIRECT, RevocationFailure.HTTP_ERROR),
        (Mode.HUGE, RevocationFailure.TOO_LARGE),
        (Mode.HANG, RevocationFailure.TIMEOUT),
        (
            Mode.TRICKLE,
            RevocationFailure.TIMEOUT,
        ),  # bytes keep coming, but the total time is bounded
    ],
)
async def test_responder_misbehaviour(
    mode: Mode,
    expected: RevocationFailure,
    fetcher: HttpFetcher,
    fresh_responder: OcspResponder,
    pki: LabPki,
) -> None:
    fresh_responder.mode = mode
    started = time.monotonic()
    assert await failure_of(fetcher, fresh_responder.url, request_der(pki)) is expected
    assert time.monotonic() - started < TIMEOUT + 2  # bounded, whatever the responder does


async def test_connection_refused_is_a_network_failure(fetcher: HttpFetcher, pki: LabPki) -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    assert await failure_of(fetcher, url, request_der(pki)) is RevocationFailure.NETWORK


async def test_per_responder_concurrency_is_limited(pki: LabPki) -> None:
    with OcspResponder(pki.issuing, pki.issuing, delay=0.2) as slow:
        async with aiohttp.ClientSession() as session:
            fetcher = HttpFetcher(session, 5.0, per_responder=2)
            der = request_der(pki)
            started = time.monotonic()
            await asyncio.gather(*(fetcher.fetch(slow.url, der) for _ in range(4)))
            # Four requests, two at a time, 0.2 s each: at least two rounds.
            assert time.monotonic() - started >= 0.4
            assert slow.requests == 4


async def test_a_dead_responder_trips_the_breaker_and_is_not_asked(pki: LabPki) -> None:
    with OcspResponder(pki.issuing, pki.issuing) as broken:
        broken.mode = Mode.HTTP_500
        async with aiohttp.ClientSession() as session:
            fetcher = HttpFetcher(session, TIMEOUT)
            der = request_der(pki)
            failures = [await failure_of(fetcher, broken.url, der) for _ in range(8)]
    assert failures[:5] == [RevocationFailure.HTTP_ERROR] * 5
    assert failures[5:] == [RevocationFailure.CIRCUIT_OPEN] * 3
    assert broken.requests == 5


@pytest.fixture
async def crl_site() -> AsyncIterator[tuple[str, bytes]]:
    """A CRL-sized body (3 MiB) served with and without a Content-Length."""
    body = bytes(range(256)) * (3 * 4096)

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=body)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 100_000):
            await response.write(body[start : start + 100_000])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/sized.crl", sized)
    app.router.add_get("/chunked.crl", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", body
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path", ["/sized.crl", "/chunked.crl"])
async def test_a_large_body_arrives_whole_in_mapped_memory(
    crl_site: tuple[str, bytes], path: str
) -> None:
    site, body = crl_site
    async with aiohttp.ClientSession() as session:
        for fetcher in (HttpFetcher(session, 10), HttpFetcher(session, 10, pace=20e6)):
            got = await fetcher.get(site + path, len(body))
            assert isinstance(got, memoryview) and got.readonly and len(got) == SPILL_BYTES * 3
            assert got == body
            with pytest.raises(RevocationError) as info:
                await fetcher.get(site + path, len(body) - 1)
            assert info.value.failure is RevocationFailure.TOO_LARGE


async def test_a_small_body_is_bytes(fresh_responder: OcspResponder, pki: LabPki) -> None:
    async with aiohttp.ClientSession() as session:
        body = await HttpFetcher(session, 10).fetch(fresh_responder.url, request_der(pki))
    assert type(body) is bytes and len(body) < SPILL_BYTES
