"""Through the real Envoy with curl as the client: what a user of the gateway sees."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.demo.pki import LabPki
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw

GRPC_TIMEOUT = 10


def unique_path() -> str:
    return f"/t/{uuid.uuid4().hex}"


def test_allowed_client_reaches_the_backend_with_its_certificate(
    stack: LocalStack, pki: LabPki
) -> None:
    client = pki.client("e2e-good")
    path = unique_path()
    result = stack.curl(
        client,
        path,
        headers=[
            "X-Client-Cert: forged",
            "X-Client-Cert: forged-again",
            "X-Mtls-Authz-Revocation: forged",
        ],
    )
    assert result.status == 200
    seen = result.json()["headers"]
    # Exactly one value: Envoy overwrote both client-sent copies.
    assert seen["x-client-cert"] == [
        base64.b64encode(client.cert.public_bytes(Encoding.DER)).decode()
    ]
    assert base64.b64decode(seen["x-client-cert"][0]) == client.cert.public_bytes(Encoding.DER)
    # The client's copy is gone; what the backend sees is mtls-authz's own verdict.
    assert seen["x-mtls-authz-revocation"] == ["good"]
    assert backend_saw(stack, path)


def test_issuer_not_allowed_gets_400_with_the_reason(stack: LocalStack, pki: LabPki) -> None:
    path = unique_path()
    result = stack.curl(pki.client("e2e-other", pki.other), path)
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "issuer_not_allowed"
    assert result.headers["content-type"] == "application/json"
    body = result.json()
    assert body["error"] == "issuer_not_allowed"
    assert "CN=Lab Other CA,O=Lab" in body["message"]
    assert not backend_saw(stack, path)


def test_foreign_ca_copying_the_allowed_dn_is_refused(stack: LocalStack, pki: LabPki) -> None:
    # Envoy trusts the foreign root in this stack, so only mtls-authz stands in the way.
    path = unique_path()
    result = stack.curl(pki.client("e2e-foreign", pki.foreign), path)
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "issuer_unknown"
    assert result.json()["error"] == "issuer_unknown"
    assert not backend_saw(stack, path)


def test_no_client_certificate_is_refused_by_envoy_during_the_handshake(
    stack: LocalStack,
) -> None:
    result = stack.curl(None, unique_path())
    assert result.status == 0  # no HTTP response at all: the TLS handshake failed


def check_directly(stack: LocalStack, certificate: str) -> external_auth_pb2.CheckResponse:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['authz']}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        request = external_auth_pb2.CheckRequest()
        request.attributes.source.certificate = certificate
        return stub.Check(request, timeout=GRPC_TIMEOUT)


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        ("", "missing_certificate"),
        ("-----BEGIN%20CERTIFICATE-----%0Agarbage%0A-----END%20CERTIFICATE-----%0A", "malformed_certificate"),
        ("\x00\x01binary", "malformed_certificate"),
    ],
)  # fmt: skip
def test_check_call_with_bad_certificate_field(
    stack: LocalStack, certificate: str, reason: str
) -> None:
    response = check_directly(stack, certificate)
    assert response.denied_response.status.code == 400
    assert json.loads(response.denied_response.body)["error"] == reason
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert headers["x-mtls-authz-reason"] == reason


def test_grpc_health_reports_serving(stack: LocalStack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['authz']}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.auth.v3.Authorization"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=GRPC_TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_ops_listener_exposes_only_ready_and_prometheus_stats(stack: LocalStack) -> None:
    base = f"http://127.0.0.1:{stack.ports['ops']}"
    with urllib.request.urlopen(f"{base}/ready", timeout=5) as ready:
        assert ready.status == 200
    with urllib.request.urlopen(f"{base}/stats/prometheus", timeout=5) as stats:
        assert "envoy_http_ext_authz_denied" in stats.read().decode()
    for path in ("/quitquitquit", "/config_dump", "/stats", "/"):
        request = urllib.request.Request(
            f"{base}{path}", method="POST" if "quit" in path else "GET"
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 404
