from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2

from authz.core.decision import Decision
from authz.core.modes import DENY_STATUSES
from authz.core.reasons import Reason
from authz.core.verdict import OWNED_HEADERS, REASON_HEADER, CertHeaderFormat, VerdictRules
from authz.demo.pki import LabPki
from authz.transports.grpc_check import render


class Rendered:
    """The verdict rules of one policy, rendered as Envoy's CheckResponse."""

    def __init__(self, rules: VerdictRules) -> None:
        self.rules = rules

    def allow(self, *args: Any) -> external_auth_pb2.CheckResponse:
        return render(self.rules.allow(*args))

    def deny(self, *args: Any) -> external_auth_pb2.CheckResponse:
        return render(self.rules.deny(*args))

    def build(self, decision: Decision) -> external_auth_pb2.CheckResponse:
        return render(self.rules.verdict(decision))


def builder(fmt: CertHeaderFormat = CertHeaderFormat.BASE64_DER, status: int = 400) -> Rendered:
    return Rendered(VerdictRules("X-Client-Cert", fmt, status))


def decode_header(value: str, fmt: CertHeaderFormat) -> bytes:
    if fmt is CertHeaderFormat.BASE64_DER:
        return base64.b64decode(value, validate=True)
    if fmt is CertHeaderFormat.RFC9440:
        assert value.startswith(":") and value.endswith(":")
        return base64.b64decode(value[1:-1], validate=True)
    return x509.load_pem_x509_certificate(unquote(value).encode()).public_bytes(Encoding.DER)


@pytest.mark.parametrize("fmt", list(CertHeaderFormat))
def test_allow_sets_the_certificate_header_in_each_format(
    pki: LabPki, fmt: CertHeaderFormat
) -> None:
    leaf = pki.client("r1")
    response = builder(fmt).allow(leaf.cert)
    assert response.status.code == code_pb2.OK
    (header,) = response.ok_response.headers
    assert header.header.key == "X-Client-Cert"
    assert decode_header(header.header.value, fmt) == leaf.cert.public_bytes(Encoding.DER)
    assert "\n" not in header.header.value and " " not in header.header.value


def test_base64_header_is_one_line_standard_base64(pki: LabPki) -> None:
    leaf = pki.client("r2")
    (header,) = builder().allow(leaf.cert).ok_response.headers
    assert header.header.value == base64.b64encode(leaf.cert.public_bytes(Encoding.DER)).decode()


def test_pem_url_escapes_like_envoy(pki: LabPki) -> None:
    (header,) = builder(CertHeaderFormat.PEM_URL).allow(pki.client("r3").cert).ok_response.headers
    assert header.header.value.startswith("-----BEGIN%20CERTIFICATE-----%0A")
    assert not set("+/= \n") & set(header.header.value)


def test_allow_overwrites_for_old_and_new_envoy(pki: LabPki) -> None:
    (header,) = builder().allow(pki.client("r4").cert).ok_response.headers
    # Envoy <= 1.37 reads only `append` (false = overwrite); newer ones read it first as well.
    assert header.HasField("append") and header.append.value is False
    assert header.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_allow_removes_client_sent_copies_of_owned_headers(pki: LabPki) -> None:
    response = builder().allow(pki.client("r5").cert)
    assert list(response.ok_response.headers_to_remove) == list(OWNED_HEADERS)


def test_the_deny_statuses_are_the_ones_envoy_knows() -> None:
    """DENY_STATUSES is transcribed from envoy.type.v3.StatusCode; it must stay equal to it."""
    known = {v.number for v in http_status_pb2.StatusCode.DESCRIPTOR.values if v.number >= 400}
    assert known == DENY_STATUSES


def test_owned_header_that_is_set_is_not_also_removed(pki: LabPki) -> None:
    response = builder().allow(pki.client("r6").cert, [("x-mtls-authz-revocation", "unchecked")])
    assert "x-mtls-authz-revocation" not in response.ok_response.headers_to_remove
    assert [h.header.key for h in response.ok_response.headers] == [
        "X-Client-Cert",
        "x-mtls-authz-revocation",
    ]


def test_deny_is_400_with_json_body_and_reason_header() -> None:
    response = builder().deny(Reason.ISSUER_NOT_ALLOWED, "Not from here.")
    denied = response.denied_response
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert denied.status.code == 400
    assert json.loads(denied.body) == {"error": "issuer_not_allowed", "message": "Not from here."}
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert headers == {"content-type": "application/json", REASON_HEADER: "issuer_not_allowed"}


def test_deny_status_is_configurable() -> None:
    assert builder(status=403).deny(Reason.ISSUER_UNKNOWN, "x").denied_response.status.code == 403


def test_internal_error_is_500_whatever_the_deny_status() -> None:
    response = builder(status=403).deny(Reason.INTERNAL_ERROR, "failed")
    assert response.denied_response.status.code == 500
    assert response.status.code == code_pb2.INTERNAL


def test_build_routes_decisions(pki: LabPki) -> None:
    leaf = pki.client("r7").cert
    assert builder().build(Decision(True, leaf=leaf)).HasField("ok_response")
    denied = builder().build(Decision(False, Reason.MISSING_CERTIFICATE, "none"))
    assert denied.denied_response.status.code == 400
    # An "allow" without a certificate cannot happen; if it did, it must not allow.
    assert builder().build(Decision(True)).denied_response.status.code == 500
