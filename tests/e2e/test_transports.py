"""The end-to-end matrix over both transports (gRPC and Envoy's HTTP ext_authz mode) and both
Envoys: what a client sees must not depend on how Envoy asks mtls-authz — except where Envoy's
HTTP mode itself differs (a 5xx answer is Envoy's own failure: the client gets status_on_error)."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.core.verdict import PEER_CERT_HEADER
from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki, make_leaf
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw
from tests.support import envoy_field, http_variant

TRANSPORTS = ("grpc", "http")
POLICIES = {
    "admin": {"require": [{"subject_prefix": "CN=admin-"}], "deny_status": 403},
    "rollout": {"allowed_issuers": [LabPki.OTHER_DN], "mode": "audit", "revocation_mode": "off"},
}
TIMEOUT = 10


@pytest.fixture(scope="module", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Matrix:
    stack: LocalStack
    ca: OpensslCa
    responder: OpensslResponder
    clients: dict[str, Identity]


def der(identity: Identity) -> str:
    return base64.b64encode(identity.cert.public_bytes(Encoding.DER)).decode()


def template_for(transport: str, workdir: Path) -> Path:
    policies = SHIPPED_ENVOY_DIR / "envoy-policies.yaml"
    return policies if transport == "grpc" else http_variant(policies, workdir / "http.yaml")


@pytest.fixture(scope="module")
def matrix(
    envoy: str, transport: str, pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Matrix]:
    workdir = tmp_path_factory.mktemp(f"matrix-{transport}")
    ca = OpensslCa(workdir / "ca", pki.issuing)
    with OpensslResponder(ca, workdir / "ocsp.log") as responder:
        url = responder.url
        clients = {
            "good": pki.client("mx-good", ocsp_url=url),
            "revoked": pki.client("mx-revoked", ocsp_url=url),
            "unknown": pki.client("mx-unknown", ocsp_url=url),
            "no-aia": pki.client("mx-no-aia"),
            "admin": make_leaf("admin-mx", pki.issuing, ocsp_url=url),
            "down": pki.client("mx-down", ocsp_url=url),
        }
        for name in ("good", "admin", "down"):
            ca.add_valid(clients[name])
        ca.revoke(clients["revoked"], "keyCompromise")
        responder.restart()
        with LocalStack(
            workdir / "stack", pki, envoy_binary=envoy, transport=transport,
            envoy_template=template_for(transport, workdir),
            envoy_trusted=(pki.root, pki.foreign_root),
            authz_args=["--policies", yaml.safe_dump(POLICIES)],
        ) as stack:  # fmt: skip
            yield Matrix(stack, ca, responder, clients)


def test_an_allowed_client_reaches_the_backend_as_itself(matrix: Matrix) -> None:
    good = matrix.clients["good"]
    forged = ["X-Client-Cert: forged", "X-Mtls-Authz-Revocation: good", f"{PEER_CERT_HEADER}: x"]
    result = matrix.stack.curl(good, "/mx/good", headers=forged)
    assert result.status == 200
    seen = result.json()["headers"]
    assert seen["x-client-cert"] == [der(good)]
    assert seen["x-mtls-authz-revocation"] == ["good"]
    assert PEER_CERT_HEADER not in seen


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("other", "issuer_not_allowed"),
        ("foreign", "issuer_unknown"),
        ("revoked", "certificate_revoked"),
        ("unknown", "certificate_status_unknown"),
        ("no-aia", "no_revocation_source"),
    ],
)
def test_every_refusal_is_400_with_its_reason(
    matrix: Matrix, pki: LabPki, client: str, reason: str
) -> None:
    identity = {
        "other": lambda: pki.client("mx-other", pki.other),
        "foreign": lambda: pki.client("mx-foreign", pki.foreign),
    }.get(client, lambda: matrix.clients[client])()
    path = f"/mx/refused-{client}"
    result = matrix.stack.curl(identity, path)
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == reason
    assert result.headers["content-type"] == "application/json"
    assert result.json()["error"] == reason
    assert not backend_saw(matrix.stack, path)


def test_the_route_s_policy_applies(matrix: Matrix) -> None:
    assert matrix.stack.curl(matrix.clients["admin"], "/admin/mx").status == 200
    refused = matrix.stack.curl(matrix.clients["good"], "/admin/mx-bob")
    assert refused.status == 403
    assert refused.headers["x-mtls-authz-reason"] == "subject_not_allowed"


def test_audit_mode_lets_through_saying_what_would_be_refused(matrix: Matrix, pki: LabPki) -> None:
    result = matrix.stack.curl(pki.client("mx-audit", pki.issuing), "/beta/mx")
    assert result.status == 200
    assert result.json()["headers"]["x-mtls-authz-would-deny"] == ["issuer_not_allowed"]


def test_a_responder_down_is_503_and_never_reaches_the_backend(
    matrix: Matrix, transport: str
) -> None:
    matrix.responder.stop()
    try:
        result = matrix.stack.curl(matrix.clients["down"], "/mx/down")
    finally:
        matrix.responder.start()
    assert result.status == 503
    assert not backend_saw(matrix.stack, "/mx/down")
    if transport == "grpc":
        assert result.headers["x-mtls-authz-reason"] == "revocation_check_failed"
        assert int(result.headers["retry-after"]) >= 1
    else:
        # Envoy's HTTP mode takes a 5xx answer as its own failure: status_on_error, no body.
        assert "x-mtls-authz-reason" not in result.headers


def check_directly(stack: LocalStack, certificate: str) -> tuple[int, str]:
    """Ask the service itself, as Envoy would, with a certificate field Envoy would never send."""
    address = f"127.0.0.1:{stack.ports['authz']}"
    if stack.transport == "grpc":
        with grpc.insecure_channel(address) as channel:
            request = external_auth_pb2.CheckRequest()
            request.attributes.source.certificate = certificate
            reply = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
                request, timeout=TIMEOUT
            )
        denied = reply.denied_response
        return denied.status.code, json.loads(denied.body)["error"]
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports["authz"], timeout=TIMEOUT)
    try:
        connection.request("GET", "/check/x", headers={PEER_CERT_HEADER: certificate})
        response = connection.getresponse()
        return response.status, json.loads(response.read())["error"]
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        ("", "missing_certificate"),
        ("-----BEGIN%20CERTIFICATE-----%0Agarbage%0A-----END%20CERTIFICATE-----%0A", "malformed_certificate"),
    ],
)  # fmt: skip
def test_a_bad_certificate_field_is_refused_with_its_reason(
    matrix: Matrix, certificate: str, reason: str
) -> None:
    assert check_directly(matrix.stack, certificate) == (400, reason)


def test_soft_fail_lets_the_client_in_marked_unchecked(
    envoy: str, transport: str, pki: LabPki, tmp_path: Path
) -> None:
    ca = OpensslCa(tmp_path / "ca", pki.issuing)
    good, revoked = pki.client("mx-soft-good"), pki.client("mx-soft-revoked")
    ca.add_valid(good)
    ca.revoke(revoked)
    with OpensslResponder(ca, tmp_path / "ocsp.log") as responder:
        args = ["--revocation-mode", "soft-fail",
                "--ocsp-responder", f"{LabPki.ISSUING_DN}={responder.url}"]  # fmt: skip
        with LocalStack(
            tmp_path / "stack", pki, envoy_binary=envoy, transport=transport, authz_args=args
        ) as stack:  # fmt: skip
            assert stack.curl(revoked, "/soft/revoked").json()["error"] == "certificate_revoked"
            responder.stop()
            result = stack.curl(good, "/soft/good", headers=["X-Mtls-Authz-Revocation: good"])
    assert result.status == 200
    assert result.json()["headers"]["x-mtls-authz-revocation"] == ["unchecked"]


def test_crl_from_the_distribution_point(
    envoy: str,
    transport: str,
    pki: LabPki,
    crl_site: tuple[OpensslCa, str, dict[str, Identity]],
    tmp_path: Path,
) -> None:
    _, _, clients = crl_site
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, transport=transport,
        authz_args=["--revocation", "crl"],
    ) as stack:  # fmt: skip
        assert stack.curl(clients["good"], "/crl/good").status == 200
        revoked = stack.curl(clients["revoked"], "/crl/revoked")
    assert revoked.status == 400 and revoked.json()["error"] == "certificate_revoked"


# -- the HTTP protocol itself -----------------------------------------------------------------


def raw(port: int, payload: bytes, reads: int = 1) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.count(b"HTTP/1.1 ") >= reads and (
                data.endswith(b"}") or b"connection: close" in data
            ):
                break
        return data


@pytest.fixture(scope="module")
def http_stack(
    envoy: str, pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with LocalStack(
        tmp_path_factory.mktemp("http"), pki, envoy_binary=envoy, transport="http",
        authz_args=["--revocation-mode", "off", *SHORT_TIMEOUTS],
    ) as stack:  # fmt: skip
        yield stack


# Short enough for a test to see them act.
SHORT_TIMEOUTS = ["--http-request-timeout", "1", "--http-idle-timeout", "2"]


def request_bytes(certificate: str, close: bool = False, method: str = "GET") -> bytes:
    connection = "connection: close\r\n" if close else ""
    return (
        f"{method} /check/p HTTP/1.1\r\nhost: authz\r\n{PEER_CERT_HEADER}: {certificate}\r\n"
        f"{connection}content-length: 0\r\n\r\n"
    ).encode()


def test_envoy_s_dash_for_no_peer_certificate_is_missing_not_malformed(
    http_stack: LocalStack,
) -> None:
    """%DOWNSTREAM_PEER_CERT% with no client certificate is "-"."""
    answer = raw(http_stack.ports["authz"], request_bytes("-", close=True))
    assert answer.split(b" ")[1] == b"400" and b'"missing_certificate"' in answer


def test_pipelined_requests_are_answered_in_order(http_stack: LocalStack, pki: LabPki) -> None:
    good = envoy_field(pki.client("mx-pipe").cert)
    payload = request_bytes(good) + request_bytes("") + request_bytes(good, close=True)
    answer = raw(http_stack.ports["authz"], payload, reads=3)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"400", b"200"]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"this is not http\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nhost: a\r\nx-big: " + b"a" * 400_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_a_malformed_or_oversized_request_gets_its_status_and_the_connection_closes(
    http_stack: LocalStack, payload: bytes, status: bytes
) -> None:
    answer = raw(http_stack.ports["authz"], payload)
    assert answer.split(b" ")[1] == status
    assert b"connection: close" in answer
    assert b"Traceback" not in answer


def test_a_refusal_to_head_has_no_body_so_the_next_response_is_read_right(
    http_stack: LocalStack, pki: LabPki
) -> None:
    """Envoy forwards the client's method: a body after the answer to HEAD would be read as the
    start of the next response on the same connection."""
    good = envoy_field(pki.client("mx-head").cert)
    payload = request_bytes("", method="HEAD") + request_bytes(good, close=True)
    answer = raw(http_stack.ports["authz"], payload, reads=2)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"x-mtls-authz-reason: missing_certificate" in head
    assert re.search(rb"content-length: [1-9]", head)  # as long as the body would be
    assert rest.startswith(b"HTTP/1.1 200 ")


def test_head_through_envoy_is_refused_with_its_reason_and_the_next_request_is_right(
    http_stack: LocalStack, pki: LabPki
) -> None:
    other = pki.client("mx-head-other", pki.other)
    cert, key = http_stack.client_files(other)
    ca = http_stack.workdir / "tls" / "server-ca.pem"
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca), "--cert", str(cert), "--key",
         str(key), "-I", f"{http_stack.url}/head", "-o", "/dev/null", "-D", "-"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.stdout.startswith("HTTP/1.1 400") or done.stdout.startswith("HTTP/2 400")
    assert "x-mtls-authz-reason: issuer_not_allowed" in done.stdout.lower()
    for n in range(3):  # the same pooled connection to mtls-authz answers on
        assert http_stack.curl(pki.client(f"mx-after-head-{n}"), "/after-head").status == 200


def test_a_request_that_does_not_arrive_in_full_is_timed_out(http_stack: LocalStack) -> None:
    """A partial request is answered 408 and its connection closed (http_request_timeout)."""
    with socket.create_connection(("127.0.0.1", http_stack.ports["authz"]), timeout=TIMEOUT) as s:
        s.sendall(b"GET /check/p HTTP/1.1\r\nhost: authz\r\nx-partial: ")
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer
        assert s.recv(65536) == b""


def test_an_idle_connection_is_closed(http_stack: LocalStack, pki: LabPki) -> None:
    """After an answer, and before any request, an idle connection is closed (http_idle_timeout);
    one that keeps asking is not."""
    port = http_stack.ports["authz"]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as silent:
        assert silent.recv(65536) == b""  # closed by the server, without a word
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as busy:
        good = envoy_field(pki.client("mx-idle").cert)
        started = time.monotonic()
        while time.monotonic() - started < 3:  # past the idle timeout, never idle for long
            busy.sendall(request_bytes(good))
            assert busy.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.3)
        assert busy.recv(65536) == b""
