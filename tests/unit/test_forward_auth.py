"""Forward-auth without the proxies: each proxy's certificate encoding, the URL that names the
proxy and the policy, and the answers each proxy understands."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz.client_cert.forwarded import FORWARD_AUTH_PROXIES
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.verdict import CertHeaderFormat, VerdictRules
from authz.demo.pki import Identity, LabPki
from authz.transports.http.forward_auth import (
    BODY_HEADER,
    STATUS_HEADER,
    ForwardAuthProtocol,
    ForwardAuthServer,
    render,
    render_nginx,
)

RULES = VerdictRules("x-client-cert", CertHeaderFormat.BASE64_DER, 400)


def traefik_value(*chain: Identity, escaped: bool = False) -> str:
    """What passTLSClientCert writes: PEM bodies without armour or newlines, leaf first."""
    bodies = []
    for identity in chain:
        pem = identity.cert.public_bytes(Encoding.PEM).decode()
        body = "".join(pem.splitlines()[1:-1])
        bodies.append(quote(body, safe="") if escaped else body)
    return ",".join(bodies)


def values(pki: LabPki, leaf: Identity) -> dict[str, str]:
    pem = leaf.cert.public_bytes(Encoding.PEM).decode()
    return {
        "traefik": traefik_value(leaf, pki.issuing),
        "caddy": base64.b64encode(leaf.cert.public_bytes(Encoding.DER)).decode(),
        "nginx": quote(pem, safe=""),
    }


@pytest.mark.parametrize("proxy", sorted(FORWARD_AUTH_PROXIES))
def test_each_proxy_s_encoding_gives_the_leaf(pki: LabPki, proxy: str) -> None:
    leaf = pki.client(f"fwd-{proxy}")
    source = FORWARD_AUTH_PROXIES[proxy]
    presented = source.present(CheckInput(certificate=values(pki, leaf)[proxy]))
    assert presented.peer and source.leaf(presented) == leaf.cert


def test_traefik_s_older_url_escaped_form_is_read_too(pki: LabPki) -> None:
    leaf = pki.client("fwd-escaped")
    source = FORWARD_AUTH_PROXIES["traefik"]
    field = traefik_value(leaf, pki.issuing, escaped=True)
    assert "%2F" in field or "%2B" in field or "%3D" in field
    assert source.leaf(source.present(CheckInput(certificate=field))) == leaf.cert


@pytest.mark.parametrize("proxy", sorted(FORWARD_AUTH_PROXIES))
@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("", Reason.MISSING_CERTIFICATE),
        ("   ", Reason.MISSING_CERTIFICATE),
        ("not a certificate", Reason.MALFORMED_CERTIFICATE),
        ("%ff%fe", Reason.MALFORMED_CERTIFICATE),
        ("QUJD", Reason.MALFORMED_CERTIFICATE),  # base64 of "ABC"
        ("A" * 70_000, Reason.MALFORMED_CERTIFICATE),
    ],
)
def test_a_bad_header_is_a_specific_refusal(proxy: str, field: str, reason: Reason) -> None:
    source = FORWARD_AUTH_PROXIES[proxy]
    with pytest.raises(Denied) as info:
        source.leaf(source.present(CheckInput(certificate=field)))
    assert info.value.reason is reason


def route(path: str, headers: dict[str, str] | None = None) -> object:
    async def handler(request: CheckInput) -> object:
        return request

    handlers = {name: handler for name in FORWARD_AUTH_PROXIES}
    server = ForwardAuthServer(handlers, 10, 10)  # type: ignore[arg-type]
    return ForwardAuthProtocol(handlers["nginx"], server).route(headers or {}, path)  # type: ignore[arg-type]


def test_the_url_names_the_proxy_and_the_policy_never_a_header() -> None:
    routed = route(
        "/forward-auth/caddy/admin?x=1",
        {"x-client-cert-der": "DER", "x-mtls-authz-policy": "other", "x-forwarded-uri": "/a?b"},
    )
    assert isinstance(routed, tuple)
    _, request, renderer = routed
    assert request == CheckInput(certificate="DER", policy="admin", path="/a?b")
    assert renderer is render
    _, request, renderer = route("/forward-auth/nginx", {"x-ssl-client-cert": "PEM"})  # type: ignore[misc]
    assert (request.policy, request.certificate, renderer) == ("", "PEM", render_nginx)
    _, request, _ = route("/forward-auth/traefik", {"x-ssl-client-cert": "PEM"})  # type: ignore[misc]
    assert request.certificate == ""  # another proxy's header is not Traefik's


@pytest.mark.parametrize(
    "path",
    ["/", "/forward-auth", "/forward-auth/", "/forward-auth/envoy", "/forward-auth/nginx/a/b"],
)
def test_any_other_url_is_404(path: str) -> None:
    answer = route(path)
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 404 ")


def test_traefik_and_caddy_get_the_refusal_itself(pki: LabPki) -> None:
    refusal = render(RULES.deny(Reason.CERTIFICATE_REVOKED, "Revoked."), False).decode()
    head, _, body = refusal.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400 Bad Request\r\n")
    assert "x-mtls-authz-reason: certificate_revoked" in head
    assert body == '{"error": "certificate_revoked", "message": "Revoked."}'
    allowed = render(RULES.allow(pki.client("fwd-allow").cert), False).decode()
    assert allowed.startswith("HTTP/1.1 200 OK\r\n") and "x-client-cert: " in allowed
    assert "x-envoy-auth-headers-to-remove" not in allowed  # Envoy's, not the proxies'


def test_nginx_gets_403_and_what_the_client_should_get_in_headers() -> None:
    verdict = RULES.deny(Reason.REVOCATION_CHECK_FAILED, "The responder failed.")
    head = render_nginx(verdict, False).decode().partition("\r\n\r\n")[0]
    assert head.startswith("HTTP/1.1 403 Forbidden\r\n")
    assert f"{STATUS_HEADER}: {verdict.status}" in head
    assert f"{BODY_HEADER}: {verdict.body}" in head
    assert "retry-after: " in head
