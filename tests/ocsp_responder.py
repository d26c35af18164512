"""A test OCSP responder: signs real responses with cryptography and misbehaves on request.

For tests and benchmarks only. `build_response` makes one response with every field adjustable;
`OcspResponder` serves them over HTTP (GET and POST, RFC 6960 appendix A) on 127.0.0.1, counts
requests, and can be slow, broken, lying or silent.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from authz.core.revocation import CertStatus
from authz.demo.pki import Identity
from authz.revocation.ocsp import HASHES

_OCSP_STATUS = {
    CertStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
    CertStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    CertStatus.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class CertIdFields:
    """Explicit CertID fields, to answer about something other than what was asked."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    hash_name: str = "sha1"


def build_response(
    about: tuple[x509.Certificate, x509.Certificate] | CertIdFields,
    signer: Identity,
    *,
    status: CertStatus = CertStatus.GOOD,
    this_update: dt.datetime | None = None,
    next_update: dt.datetime | bool | None = True,
    revocation_time: dt.datetime | None = None,
    revocation_reason: x509.ReasonFlags | None = None,
    hash_name: str = "sha1",
    nonce: bytes | None = None,
    by_key: bool = True,
    include_signer: bool = True,
    extra_certs: Sequence[x509.Certificate] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    sign_hash: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A DER OCSP response about `(cert, issuer)`, or about explicit CertID fields.

    `next_update=True` means thisUpdate + 1 hour; False or None leaves it out.
    """
    this_update = this_update or _now() - dt.timedelta(minutes=1)
    if next_update is True:
        next_update = this_update + dt.timedelta(hours=1)
    elif next_update is False:
        next_update = None
    if status is CertStatus.REVOKED and revocation_time is None:
        revocation_time = this_update - dt.timedelta(hours=1)
    builder = ocsp.OCSPResponseBuilder()
    common: dict[str, Any] = {
        "cert_status": _OCSP_STATUS[status],
        "this_update": this_update,
        "next_update": next_update,
        "revocation_time": revocation_time if status is CertStatus.REVOKED else None,
        "revocation_reason": revocation_reason if status is CertStatus.REVOKED else None,
    }
    if isinstance(about, CertIdFields):
        builder = builder.add_response_by_hash(
            issuer_name_hash=about.issuer_name_hash,
            issuer_key_hash=about.issuer_key_hash,
            serial_number=about.serial_number,
            algorithm=HASHES[about.hash_name],
            **common,
        )
    else:
        cert, issuer = about
        builder = builder.add_response(
            cert=cert, issuer=issuer, algorithm=HASHES[hash_name], **common
        )
    encoding = ocsp.OCSPResponderEncoding.HASH if by_key else ocsp.OCSPResponderEncoding.NAME
    builder = builder.responder_id(encoding, signer.cert)
    certs = [*([signer.cert] if include_signer else []), *extra_certs]
    if certs:
        builder = builder.certificates(certs)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    response = builder.sign(signer.key, sign_hash or hashes.SHA256())
    return response.public_bytes(Encoding.DER)


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


class Mode(StrEnum):
    NORMAL = "normal"
    GARBAGE = "garbage"  # 200 with bytes that are not OCSP
    HTTP_500 = "http_500"
    TRY_LATER = "try_later"
    HANG = "hang"  # accept, read the request, never answer
    HUGE = "huge"  # 200 with a body far over any sane OCSP response size
    REDIRECT = "redirect"  # 302 to somewhere else
    TRICKLE = "trickle"  # 200, then one byte every 0.2 s, forever


@dataclass
class OcspResponder:
    """Answers for certificates issued by `issuer`, signed by `signer`, on 127.0.0.1:`port`."""

    issuer: Identity
    signer: Identity
    statuses: dict[int, tuple[CertStatus, dt.datetime | None]] = field(default_factory=dict)
    default_status: CertStatus = CertStatus.GOOD
    mode: Mode = Mode.NORMAL
    delay: float = 0.0
    validity: dt.timedelta = dt.timedelta(hours=1)
    requests: int = 0
    backdate: dt.timedelta = dt.timedelta(seconds=30)
    """How far before now answers say they were produced (thisUpdate)."""
    answered: list[tuple[int, float]] = field(default_factory=list)
    """(serial, time.monotonic()) of every certificate answered for."""
    methods: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ocsp"

    def revoke(self, serial: int, when: dt.datetime | None = None) -> None:
        self.statuses[serial] = (CertStatus.REVOKED, when or _now() - dt.timedelta(minutes=5))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.methods.append(request.method)
        if request.method == "POST":
            body = await request.read()
        else:
            body = base64.b64decode(unquote(request.match_info["tail"]))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode is Mode.HANG:
            await asyncio.sleep(3600)
        if self.mode is Mode.TRICKLE:
            response = web.StreamResponse(headers={"Content-Type": "application/ocsp-response"})
            await response.prepare(request)
            while True:
                await response.write(b"\x30")
                await asyncio.sleep(0.2)
        if self.mode is Mode.HUGE:
            return web.Response(
                body=b"\x30" * (1024 * 1024), content_type="application/ocsp-response"
            )
        if self.mode is Mode.REDIRECT:
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        if self.mode is Mode.HTTP_500:
            return web.Response(status=500, text="broken")
        if self.mode is Mode.GARBAGE:
            return web.Response(body=b"\x30\x03garbage", content_type="application/ocsp-response")
        if self.mode is Mode.TRY_LATER:
            der = unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        else:
            der = self._answer(ocsp.load_der_ocsp_request(body))
        return web.Response(body=der, content_type="application/ocsp-response")

    def _answer(self, request: ocsp.OCSPRequest) -> bytes:
        status, revoked_at = self.statuses.get(request.serial_number, (self.default_status, None))
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
        self.answered.append((request.serial_number, time.monotonic()))
        this_update = _now() - self.backdate
        asked = CertIdFields(
            request.issuer_name_hash,
            request.issuer_key_hash,
            request.serial_number,
            request.hash_algorithm.name,
        )
        return build_response(
            asked,
            self.signer,
            status=status,
            this_update=this_update,
            next_update=this_update + self.validity,
            revocation_time=revoked_at,
            nonce=nonce,
        )

    def make_app(self) -> web.Application:
        async def stats(_: web.Request) -> web.Response:
            return web.json_response({"requests": self.requests})

        app = web.Application()
        app.router.add_post("/ocsp", self._handle)
        app.router.add_post("/ocsp/", self._handle)
        app.router.add_get("/ocsp/{tail:.+}", self._handle)
        app.router.add_get("/_stats", stats)
        return app

    # -- running in a background thread, so synchronous tests can use it ----------------------
    def start(self) -> OcspResponder:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="ocsp-responder", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("OCSP responder did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> OcspResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Run in the foreground (a process of its own, e.g. for benchmarks): `/_stats` counts."""
    import argparse

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", type=Path, required=True, help="CA certificate PEM")
    parser.add_argument("--signer", type=Path, required=True, help="Signer certificate PEM")
    parser.add_argument("--signer-key", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="Added seconds per answer")
    args = parser.parse_args()
    issuer = x509.load_pem_x509_certificate(args.issuer.read_bytes())
    signer_key = load_pem_private_key(args.signer_key.read_bytes(), None)
    signer = Identity(x509.load_pem_x509_certificate(args.signer.read_bytes()), signer_key)  # type: ignore[arg-type]
    responder = OcspResponder(Identity(issuer, signer_key), signer, delay=args.delay)  # type: ignore[arg-type]
    web.run_app(responder.make_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
