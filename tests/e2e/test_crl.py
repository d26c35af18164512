"""CRLs through the real Envoy: made by `openssl ca -gencrl`, served over HTTP, from the
certificates' distribution points; and OCSP falling back to the CRL."""

from __future__ import annotations

from pathlib import Path

from authz.demo.openssl_ocsp import OpensslCa
from authz.demo.pki import Identity, LabPki
from authz.demo.processes import free_port
from authz.demo.stack import LocalStack


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
