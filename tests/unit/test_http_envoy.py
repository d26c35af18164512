"""The HTTP transport's translation, without a socket: headers → CheckInput, Verdict → bytes."""

from __future__ import annotations

import dataclasses

from authz.core.reasons import Reason
from authz.core.verdict import CertHeaderFormat, VerdictRules
from authz.demo.pki import LabPki
from authz.transports.http.envoy import check_input, render

RULES = VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, policy="admin")


def test_envoy_s_formatter_placeholders_mean_absent() -> None:
    request = check_input(
        {"x-mtls-authz-peer-cert": "-", "x-mtls-authz-policy": "-", "x-request-id": "r1"}, "/c/p"
    )
    assert (request.certificate, request.policy, request.request_id, request.path) == (
        "", "", "r1", "/c/p",
    )  # fmt: skip
    named = check_input({"x-mtls-authz-peer-cert": "PEM", "x-mtls-authz-policy": "admin"}, "/")
    assert (named.certificate, named.policy, named.cached_as) == ("PEM", "admin", None)


def test_an_allow_sets_and_removes_upstream_headers(pki: LabPki) -> None:
    response = render(RULES.allow(pki.client("h1").cert), False).decode()
    head, _, body = response.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK" and body == ""
    assert any(line.startswith("X-Client-Cert: ") for line in lines)
    (remove,) = [line for line in lines if line.startswith("x-envoy-auth-headers-to-remove: ")]
    removed = remove.split(": ", 1)[1].split(",")
    assert "x-mtls-authz-revocation" in removed and "x-mtls-authz-peer-cert" in removed
    assert "x-client-cert" not in removed  # set, so not removed
    assert "content-length: 0" in lines and "connection: close" not in lines


def test_a_refusal_has_its_status_body_and_reason_and_can_close() -> None:
    response = render(RULES.deny(Reason.ISSUER_NOT_ALLOWED, "No."), True).decode()
    head, _, body = response.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400 Bad Request\r\n")
    assert "x-mtls-authz-reason: issuer_not_allowed" in head and "connection: close" in head
    assert body == '{"error": "issuer_not_allowed", "message": "No."}'
    assert f"content-length: {len(body)}" in head


def test_a_replayable_verdict_carries_the_cache_headers() -> None:
    verdict = dataclasses.replace(RULES.deny(Reason.CERTIFICATE_REVOKED, "Revoked."), ttl=30)
    head = render(verdict, False).decode().partition("\r\n\r\n")[0]
    assert "x-mtls-authz-cache-ttl: 30" in head and "x-mtls-authz-cache-policy: admin" in head
    assert "x-mtls-authz-cache-decision: deny" in head and "x-mtls-authz-cache-status: 400" in head
    plain = render(RULES.deny(Reason.CERTIFICATE_REVOKED, "Revoked."), False).decode()
    assert "x-mtls-authz-cache-" not in plain
