"""Forward-auth behind the real proxies — Traefik 3.7.15 and Caddy 2.11.7 (their wheels), nginx
1.22.1 (Debian) — each run from its recipe in deploy/integrations, with `openssl ocsp` as the
responder and curl as the client: who gets in, what reaches the app, what a client can forge, and
what happens when mtls-authz is down, frozen or not mtls-authz at all."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki
from authz.demo.processes import free_port
from authz.demo.stack import HttpResult
from tests.forward_auth_stack import PROXIES, ProxyStack, proxy_binary

# The header each recipe hands the certificate to mtls-authz in, and removes before the app
# (Traefik's own X-Forwarded-Tls-Client-Cert is written by passTLSClientCert and may reach it).
CERTIFICATE_HEADER = {"caddy": ("x-client-cert-der",), "nginx": ("x-ssl-client-cert",)}
CONFIG = """\
allowed_issuers: ["{issuing}"]
identity_headers: [subject, fingerprint]
policies:
  admin:
    require:
      - subject_prefix: "CN=admin-"
"""


class Site:
    """One proxy in front of the app, mtls-authz behind it, and the clients."""

    def __init__(self, stack: ProxyStack, clients: dict[str, Identity]) -> None:
        self.stack, self.clients = stack, clients

    def get(self, client: str | None, path: str = "/app", *headers: str) -> HttpResult:
        identity = self.clients[client] if client is not None else None
        return self.stack.curl(identity, path, headers)


@pytest.fixture(scope="module", params=PROXIES)
def site(
    request: pytest.FixtureRequest, pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    proxy = request.param
    if proxy_binary(proxy) is None:
        pytest.skip(f"no {proxy}")
    workdir = tmp_path_factory.mktemp(f"forward-auth-{proxy}")
    ca = OpensslCa(workdir / "ca", pki.issuing)
    clients = {
        "good": pki.client(f"fa-good-{proxy}"),
        "revoked": pki.client(f"fa-revoked-{proxy}"),
        "admin": pki.client(f"admin-{proxy}"),
    }
    for client in clients.values():
        ca.add_valid(client)
    ca.revoke(clients["revoked"], "keyCompromise")
    clients["other-ca"] = pki.client(f"fa-other-{proxy}", pki.other)
    config = workdir / "config.yaml"
    config.write_text(CONFIG.format(issuing=LabPki.ISSUING_DN))
    with OpensslResponder(ca, workdir / "ocsp.log") as responder:
        args = ["--config", str(config), "--ocsp-responder", f"{LabPki.ISSUING_DN}={responder.url}"]
        with ProxyStack(proxy, workdir / "stack", pki, args) as stack:
            yield Site(stack, clients)


def echoed(result: HttpResult) -> dict[str, list[str]]:
    assert result.status == 200, (result.status, result.body)
    headers: dict[str, list[str]] = json.loads(result.body)["headers"]
    return headers


def der_b64(identity: Identity) -> str:
    return base64.b64encode(identity.cert.public_bytes(Encoding.DER)).decode()


def refused_as(result: HttpResult, reason: str, status: int = 400) -> None:
    """The client gets our status, JSON body and reason, whatever the proxy (nginx through the
    recipe's error_page)."""
    assert result.status == status, (result.status, result.body)
    assert json.loads(result.body)["error"] == reason
    assert result.headers.get("x-mtls-authz-reason") == reason


def test_a_good_client_reaches_the_app_with_its_own_certificate(site: Site) -> None:
    headers = echoed(site.get("good"))
    assert headers["x-client-cert"] == [der_b64(site.clients["good"])]
    assert headers["x-client-cert-subject"] == [f"CN=fa-good-{site.stack.proxy},O=Lab"]
    assert headers["x-mtls-authz-revocation"] == ["good"]
    for name in CERTIFICATE_HEADER.get(site.stack.proxy, ()):
        assert name not in headers


def test_a_revoked_client_is_refused_with_the_reason(site: Site) -> None:
    result = site.get("revoked")
    refused_as(result, "certificate_revoked")
    assert "keyCompromise" in json.loads(result.body)["message"]


def test_a_client_of_another_ca_is_refused(site: Site) -> None:
    refused_as(site.get("other-ca"), "issuer_not_allowed")


def test_a_client_without_a_certificate_never_reaches_the_app(site: Site) -> None:
    """The recipes require a client certificate at the handshake (curl gets no response, or
    nginx's own 400)."""
    result = site.get(None)
    assert result.status in (0, 400), result.status
    assert b'"headers"' not in result.body


def test_a_route_s_policy_is_the_one_its_url_names(site: Site) -> None:
    assert echoed(site.get("admin", "/admin/x"))["x-client-cert"] == [
        der_b64(site.clients["admin"])
    ]
    refused_as(site.get("good", "/admin/x"), "subject_not_allowed")
    assert site.get("good", "/app").status == 200


def test_nothing_a_client_sends_is_believed_or_forwarded(site: Site) -> None:
    """The revoked client sends the good client's certificate in every header a proxy could
    hand over, and forges what mtls-authz sets: it is still judged on its own certificate; the
    good client's forgeries never reach the app."""
    good = site.clients["good"]
    pem = good.cert.public_bytes(Encoding.PEM).decode()
    bare = "".join(pem.splitlines()[1:-1])
    forged = (
        f"X-Forwarded-Tls-Client-Cert: {bare}",
        f"X-Client-Cert-Der: {der_b64(good)}",
        f"X-Ssl-Client-Cert: {urllib.parse.quote(pem)}",
    )
    refused_as(site.get("revoked", "/app", *forged), "certificate_revoked")
    theirs = (
        "X-Client-Cert: forged",
        "X-Client-Cert-Subject: CN=admin-root,O=Lab",
        "X-Client-Cert-Serial: 1",
        "Client-Cert: :Zm9yZ2Vk:",
        "X-Mtls-Authz-Revocation: good",
        "X-Mtls-Authz-Would-Deny: none",
    )
    headers = echoed(site.get("good", "/app", *theirs, *forged[1:]))
    assert headers["x-client-cert"] == [der_b64(good)]
    assert headers["x-client-cert-subject"] != ["CN=admin-root,O=Lab"]
    for name in ("x-client-cert-serial", "client-cert", "x-mtls-authz-would-deny",
                 *CERTIFICATE_HEADER.get(site.stack.proxy, ())):  # fmt: skip
        assert name not in headers, name
    assert headers["x-mtls-authz-revocation"] == ["good"]
    if site.stack.proxy == "traefik":  # its own header: the client's copy was replaced
        assert headers["x-forwarded-tls-client-cert"] != [bare]


def test_mtls_authz_frozen_or_stopped_lets_nobody_in(site: Site) -> None:
    """Frozen (SIGSTOP): the proxy's timeout (Caddy 5 s, nginx 5 s as the recipes set; Traefik's
    fixed 30 s outlasts curl's own timeout) ends in an error, never the app. Stopped: an
    error at once. Started again: in again."""
    stack = site.stack
    assert stack.authz is not None
    os.kill(stack.authz.pid, signal.SIGSTOP)
    try:
        frozen = site.get("good")
    finally:
        os.kill(stack.authz.pid, signal.SIGCONT)
    assert frozen.status == 0 or frozen.status >= 500, frozen.status
    assert b'"headers"' not in frozen.body
    stack.authz.stop()
    try:
        stopped = site.get("good")
        assert stopped.status >= 500 and b'"headers"' not in stopped.body, stopped.status
    finally:
        stack.start_authz()
    assert site.get("good").status == 200


@pytest.fixture
def not_mtls_authz() -> Iterator[int]:
    """A server on the forward-auth port that answers every connection with bytes that are not
    HTTP, then closes it."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(65536)
                connection.sendall(b"\x00\x01garbage, not HTTP\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("proxy", PROXIES)
def test_an_answer_that_is_not_http_lets_nobody_in(
    proxy: str, pki: LabPki, tmp_path: Path, not_mtls_authz: int
) -> None:
    if proxy_binary(proxy) is None:
        pytest.skip(f"no {proxy}")
    with ProxyStack(proxy, tmp_path, pki, [], authz_port=not_mtls_authz, with_authz=False) as stack:
        result = stack.curl(pki.client("fa-garbage"), "/app")
    assert result.status >= 500 and b'"headers"' not in result.body, result.status
