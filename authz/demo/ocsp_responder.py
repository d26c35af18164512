"""`mtls-authz demo-ocsp-responder`: OCSP for one demo CA, for the Kubernetes quick try.

Demo only: where the local demo runs `openssl ocsp`, a cluster has no openssl image to run, so
the mtls-authz image answers for the CA itself. It reads a directory (the `demo-ocsp` Secret
that `mtls-authz k8s-demo-secrets` prints):

    issuer.pem    the CA it answers for
    signer.pem    a delegated responder certificate that CA issued (id-kp-OCSPSigning)
    signer.key    its key
    revoked.txt   one revoked serial per line: hex serial, revocation time (ISO 8601)

Every other serial of that CA is `good`; a request about another CA is `unauthorized`
(RFC 6960 §2.3). Answers are signed by cryptography's OCSPResponseBuilder, valid for
`VALIDITY`, over HTTP POST and GET (RFC 6960 appendix A).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from authz.demo.pki import Identity, PrivateKey
from authz.revocation.ocsp import HASHES, build_query

VALIDITY = dt.timedelta(minutes=5)
CONTENT_TYPE = "application/ocsp-response"
MAX_REQUEST = 16 * 1024


@dataclass(frozen=True)
class DemoResponder:
    issuer: x509.Certificate
    signer: Identity
    revoked: Mapping[int, dt.datetime]

    @classmethod
    def load(cls, directory: Path) -> DemoResponder:
        issuer = x509.load_pem_x509_certificate((directory / "issuer.pem").read_bytes())
        signer_cert = x509.load_pem_x509_certificate((directory / "signer.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "signer.key").read_bytes(), None)
        if not isinstance(key, PrivateKey):
            raise ValueError("signer.key: expected an EC private key")
        revoked_file = directory / "revoked.txt"
        text = revoked_file.read_text() if revoked_file.exists() else ""
        return cls(issuer, Identity(signer_cert, key), parse_revoked(text))

    def answer(self, request_der: bytes, now: dt.datetime) -> bytes:
        """The DER response to one DER request."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        algorithm = request.hash_algorithm
        if algorithm.name not in HASHES:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        ours = build_query(self.signer.cert, self.issuer, algorithm.name).cert_id
        asked = (request.issuer_name_hash, request.issuer_key_hash)
        if asked != (ours.issuer_name_hash, ours.issuer_key_hash):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        serial = request.serial_number
        revoked_at = self.revoked.get(serial)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=serial,
            algorithm=algorithm,
            cert_status=ocsp.OCSPCertStatus.GOOD
            if revoked_at is None
            else ocsp.OCSPCertStatus.REVOKED,
            this_update=now,
            next_update=now + VALIDITY,
            revocation_time=revoked_at,
            revocation_reason=None,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.signer.cert)
        builder = builder.certificates([self.signer.cert])
        for extension in request.extensions:
            if isinstance(extension.value, x509.OCSPNonce):
                builder = builder.add_extension(extension.value, critical=False)
        response = builder.sign(self.signer.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)


def parse_revoked(text: str) -> dict[int, dt.datetime]:
    """`revoked.txt`: `<hex serial> <ISO 8601 time>` per line; `#` starts a comment."""
    revoked: dict[int, dt.datetime] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"revoked.txt line {number}: expected '<hex serial> <time>'")
        when = dt.datetime.fromisoformat(fields[1].replace("Z", "+00:00"))
        revoked[int(fields[0], 16)] = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return revoked


def format_revoked(revoked: Mapping[int, dt.datetime]) -> str:
    lines = [f"{serial:x} {when.isoformat()}" for serial, when in sorted(revoked.items())]
    return "".join(f"{line}\n" for line in lines)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_app(responder: DemoResponder) -> web.Application:
    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=responder.answer(body, _now()), content_type=CONTENT_TYPE)

    async def get(request: web.Request) -> web.Response:
        try:
            der = base64.b64decode(unquote(request.match_info["encoded"]), validate=True)
        except ValueError:
            der = b""
        return web.Response(body=responder.answer(der, _now()), content_type=CONTENT_TYPE)

    app = web.Application(client_max_size=MAX_REQUEST)
    app.router.add_post("/{tail:.*}", post)
    app.router.add_get("/{encoded:.+}", get)
    return app


def serve(directory: Path, host: str, port: int) -> int:
    """Answer until stopped (SIGTERM/SIGINT)."""
    responder = DemoResponder.load(directory)
    print(
        f"answering for {responder.issuer.subject.rfc4514_string()} "
        f"({len(responder.revoked)} revoked) on {host}:{port}",
        flush=True,
    )
    web.run_app(make_app(responder), host=host, port=port, print=None)
    return 0
