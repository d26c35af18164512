"""A realistic CheckRequest, as Envoy sends it for an mTLS request: certificate, XFCC, ~15 headers."""

from __future__ import annotations

import uuid

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.service.auth.v3 import external_auth_pb2

_ESCAPES = {"\n": "%0A", " ": "%20", "+": "%2B", "/": "%2F", "=": "%3D"}


def _escape(pem: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in pem)


def check_request(
    leaf: x509.Certificate, issuer: x509.Certificate
) -> external_auth_pb2.CheckRequest:
    pem = leaf.public_bytes(Encoding.PEM).decode()
    chain = pem + issuer.public_bytes(Encoding.PEM).decode()
    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = "10.1.2.3"
    attributes.source.address.socket_address.port_value = 51234
    attributes.source.certificate = _escape(pem)
    attributes.source.principal = "CN=bench,O=Lab"
    attributes.destination.address.socket_address.address = "10.1.2.4"
    attributes.destination.address.socket_address.port_value = 8443
    http = attributes.request.http
    http.id = "1234567890"
    http.method = "GET"
    http.path = "/api/v1/orders?limit=20"
    http.host = "gateway.example"
    http.scheme = "https"
    http.protocol = "HTTP/1.1"
    http.headers.update(
        {
            ":authority": "gateway.example",
            ":method": "GET",
            ":path": "/api/v1/orders?limit=20",
            ":scheme": "https",
            "user-agent": "bench-client/1.0",
            "accept": "application/json",
            "accept-encoding": "gzip, deflate, br",
            "accept-language": "en-GB,en;q=0.9",
            "x-forwarded-proto": "https",
            "x-request-id": str(uuid.uuid4()),
            "x-envoy-expected-rq-timeout-ms": "15000",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cookie": "session=abcdef0123456789; theme=dark",
            "cache-control": "no-cache",
            "x-forwarded-client-cert": f'Hash=0123;Subject="CN=bench,O=Lab";Chain="{_escape(chain)}"',
        }
    )
    return request
