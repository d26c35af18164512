"""The HTTP/1.1 listener the HTTP transports share: an asyncio protocol over httptools (llhttp)
that reads requests in order, has each decided, and writes the answers in order (pipelining,
keep-alive), with bounds on what a request may cost and how long it may take. What a request
means and how a verdict is written are the transport's (`route`): Envoy's HTTP ext_authz
(`envoy.py`), forward-auth (`forward_auth.py`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

import httptools

from authz.core.certificate import MAX_CERTIFICATE_FIELD_CHARS, MAX_XFCC_CHARS
from authz.core.check import CheckHandler
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.verdict import (
    INTERNAL_ERROR_VERDICT,
    Verdict,
)

log = logging.getLogger("authz.check")

REQUEST_ID_HEADER = "x-request-id"
# Bounds: the certificate header and XFCC may be large, everything else is small. A request over
# them is answered 431 and the connection closed.
MAX_HEADER_BYTES = MAX_CERTIFICATE_FIELD_CHARS + MAX_XFCC_CHARS + 16 * 1024
MAX_URL_BYTES = 8 * 1024
# Requests parsed but not answered yet on one connection (pipelining): beyond this, stop reading.
MAX_PENDING = 64


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def header_lines(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)


_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n"
    b"connection: close\r\n\r\nbad request\n"
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"content-length: 17\r\nconnection: close\r\n\r\nheaders too large\n"
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 16\r\n"
    b"connection: close\r\n\r\nrequest timeout\n"
)
# Defaults of the listener's two timeouts (settings http_request_timeout, http_idle_timeout).
REQUEST_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0


def response(
    status: int, headers: list[tuple[str, str]], body: bytes, close: bool, head: bool
) -> bytes:
    """An HTTP/1.1 response. The answer to a HEAD request has no body (RFC 9110 §9.3.2): its
    Content-Length says how long the body would be, and the bytes are not sent, or the client
    would read them as the next response."""
    headers = [*headers, ("content-length", str(len(body)))]
    if close:
        headers.append(("connection", "close"))
    line = f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode()
    return line + header_lines(headers) + b"\r\n" + (b"" if head else body)


def plain(verdict: Verdict, close: bool, head: bool = False) -> bytes:
    """A verdict as it is: its status, headers and (for a refusal) body."""
    body = b"" if verdict.allowed else verdict.body.encode()
    return response(verdict.status, list(verdict.headers), body, close, head)


INTERNAL_ERROR_RESPONSE = plain(INTERNAL_ERROR_VERDICT, True)


def answer_now(check: Coroutine[Any, Any, Verdict]) -> Verdict | None:
    """Run a check to its end if it can end without waiting (a returning client: everything it
    needs is cached), else abandon it and say so (None): the caller then runs the check again as a
    task, which joins whatever the first run started (loads are single-flight). Saves creating
    and scheduling a task for most requests."""
    try:
        check.send(None)
    except StopIteration as done:
        verdict: Verdict = done.value
        return verdict
    except Exception:
        log.exception("check failed", extra={"reason": Reason.INTERNAL_ERROR.value})
        return INTERNAL_ERROR_VERDICT
    check.close()
    return None


Renderer = Callable[[Verdict, bool, bool], bytes]
"""A verdict → the HTTP response's bytes (arguments: the verdict, close, HEAD)."""
Routed = tuple[CheckHandler, CheckInput, Renderer]


class _TooLarge(Exception):
    """Raised in a parser callback; httptools re-raises it wrapped, so `oversized` says why."""


class CheckProtocol(asyncio.Protocol):
    """One connection from Envoy: requests parsed in order, answered in order (pipelining),
    keep-alive unless the request says otherwise."""

    def __init__(self, checks: CheckHandler, server: HttpCheckServer) -> None:
        self._checks = checks
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: collections.deque[tuple[Routed, bool, bool]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._oversized = False
        # For the timeouts: when the request being read began, or when the connection went idle
        # (the server's clock, updated by its sweep: no timer per request).
        self._reading = False
        self._since = server.clock
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._name = ""

    # -- asyncio ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(_TOO_LARGE if self._oversized else _BAD_REQUEST)
        if len(self._pending) >= MAX_PENDING and self._transport is not None:
            self._transport.pause_reading()

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()
        self._reading, self._since = True, self._server.clock

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            self._oversized = True
            raise _TooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._oversized = True
            raise _TooLarge
        key = name.decode("latin-1").lower()
        self._headers[key] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self._reading = False
        routed = self.route(self._headers, self._url.decode("latin-1"))
        if isinstance(routed, bytes):
            self._fail(routed)
            return
        close = not self._parser.should_keep_alive()
        head = self._parser.get_method() == b"HEAD"
        if not self._pending and (self._worker is None or self._worker.done()):
            checks, request, renderer = routed
            verdict = answer_now(checks(request))
            if verdict is not None:  # decided without waiting: no task needed
                self._respond(verdict, close, head, renderer)
                return
        self._pending.append((routed, close, head))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._answer())

    def route(self, headers: dict[str, str], path: str) -> Routed | bytes:
        """Which handler decides this request, on what input, and how its verdict is written;
        or the bytes of an answer given at once (and the connection closed)."""
        raise NotImplementedError

    # -- answering -------------------------------------------------------------------------------
    async def _answer(self) -> None:
        while self._pending and not self._closing:
            (checks, request, renderer), close, head = self._pending.popleft()
            try:
                verdict = await checks(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("check failed", extra={"reason": Reason.INTERNAL_ERROR.value})
                verdict = INTERNAL_ERROR_VERDICT
            if not self._respond(verdict, close, head, renderer):
                return
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def _respond(
        self, verdict: Verdict, close: bool, head: bool = False, renderer: Renderer | None = None
    ) -> bool:
        """Write the answer; False when the connection is closing after it."""
        self._since = self._server.clock
        try:
            response = (renderer or plain)(verdict, close, head)
        except Exception:
            log.exception("check failed", extra={"reason": Reason.INTERNAL_ERROR.value})
            response, close = INTERNAL_ERROR_RESPONSE, True
        self._write(response)
        if close:
            self._close()
        return not close

    def _write(self, response: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(response)

    def _fail(self, response: bytes) -> None:
        self._pending.clear()
        self._write(response)
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def sweep(self, now: float, request_timeout: float, idle_timeout: float) -> None:
        """Close the connection if a request has taken too long to arrive (408) or it has been
        idle too long; never while a request is being answered (the check has its own bounds)."""
        if self._closing or self._pending or self.answering is not None:
            return
        if self._reading:
            if now - self._since >= request_timeout:
                self._fail(_TIMED_OUT)
        elif now - self._since >= idle_timeout:
            self._close()

    @property
    def answering(self) -> asyncio.Task[None] | None:
        """The task answering this connection's requests, while there is one."""
        return None if self._worker is None or self._worker.done() else self._worker

    def close(self) -> None:
        self._close()


class HttpCheckServer:
    """The listener: starts, and on shutdown stops accepting, lets in-flight checks finish for
    up to `grace` seconds, then closes every connection. A request must arrive in full within
    `request_timeout` seconds of its first byte (else 408), and a connection idle longer than
    `idle_timeout` is closed: one sweep over the connections does both, ten times per timeout
    (so either fires up to a tenth early)."""

    def __init__(
        self,
        checks: CheckHandler,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._checks = checks
        self.connections: set[CheckProtocol] = set()
        self._server: asyncio.Server | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.clock = time.monotonic()

    protocol: type[CheckProtocol] = CheckProtocol

    def _protocol(self) -> CheckProtocol:
        return self.protocol(self._checks, self)

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        factory: Callable[[], CheckProtocol] = self._protocol
        self._server = await asyncio.get_running_loop().create_server(
            factory, host, port, reuse_port=reuse_port
        )
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep())
        return int(self._server.sockets[0].getsockname()[1])

    async def _sweep(self) -> None:
        interval = min(1.0, max(0.02, min(self.request_timeout, self.idle_timeout) / 10))
        while True:
            await asyncio.sleep(interval)
            self.clock = now = time.monotonic()
            for connection in list(self.connections):
                connection.sweep(now, self.request_timeout, self.idle_timeout)

    async def stop(self, grace: float) -> None:
        if self._server is None:
            return
        if self._sweeping is not None:
            self._sweeping.cancel()
        self._server.close()
        answering = [t for c in self.connections if (t := c.answering) is not None]
        if answering:
            await asyncio.wait(answering, timeout=grace)
        for connection in list(self.connections):
            connection.close()
        await self._server.wait_closed()
