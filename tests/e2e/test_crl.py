"""CRLs through the real Envoy: made by `openssl ca -gencrl`, served over HTTP, from the
certificates' distribution points; and OCSP falling back to the CRL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.demo.openssl_ocsp import OpensslCa
from authz.demo.pki import Identity, LabPki
from authz.demo.processes import Process, free_port, http_ok
from authz.demo.stack import LocalStack


@pytest.fixture(scope="module")
def crl_site(
    pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OpensslCa, str, dict[str, Identity]]]:
    """An openssl CA with one revoked client, its CRL served by a plain HTTP server."""
    root = tmp_path_factory.mktemp("crl")
    ca = OpensslCa(root / "ca", pki.issuing)
    port = free_port()
    url = f"http://127.0.0.1:{port}/issuing.crl"
    clients = {
        "good": pki.client("crl-good", crl_url=url),
        "revoked": pki.client("crl-revoked", crl_url=url),
    }
    for client in clients.values():
        ca.add_valid(client)
    ca.revoke(clients["revoked"], "keyCompromise")
    site = root / "site"
    site.mkdir()
    ca.gencrl(site / "issuing.crl")
    server = Process(
        "crl server",
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(site),
        ],
        root / "http.log",
    ).start()
    try:
        server.wait_until(lambda: http_ok(url), 30, "serving")
        yield ca, url, clients
    finally:
        server.stop()


def test_crl_from_the_distribution_point(
    envoy: str, pki: LabPki, crl_site: tuple[OpensslCa, str, dict[str, Identity]], tmp_path: Path
) -> None:
    _, _, clients = crl_site
    with LocalStack(tmp_path, pki, envoy_binary=envoy, authz_args=["--revocation", "crl"]) as stack:
        good = stack.curl(clients["good"], "/crl-good")
        revoked = stack.curl(clients["revoked"], "/crl-revoked")
        no_cdp = stack.curl(pki.client("crl-none"), "/crl-none")
    assert good.status == 200
    assert good.json()["headers"]["x-mtls-authz-revocation"] == ["good"]
    assert revoked.status == 400
    assert revoked.json()["error"] == "certificate_revoked"
    assert "keyCompromise" in revoked.json()["message"]
    assert no_cdp.headers["x-mtls-authz-reason"] == "no_revocation_source"


def test_ocsp_then_crl_falls_back_when_the_responder_is_down(
    envoy: str, pki: LabPki, crl_site: tuple[OpensslCa, str, dict[str, Identity]], tmp_path: Path
) -> None:
    _, url, clients = crl_site
    dead_responder = f"{LabPki.ISSUING_DN}=http://127.0.0.1:{free_port()}/ocsp"
    args = ["--revocation", "ocsp-then-crl", "--ocsp-responder", dead_responder,
            "--crl-url", f"{LabPki.ISSUING_DN}={url}"]  # fmt: skip
    with LocalStack(tmp_path, pki, envoy_binary=envoy, authz_args=args) as stack:
        assert stack.curl(clients["good"], "/fallback-good").status == 200
        revoked = stack.curl(clients["revoked"], "/fallback-revoked")
    assert revoked.status == 400 and revoked.json()["error"] == "certificate_revoked"
