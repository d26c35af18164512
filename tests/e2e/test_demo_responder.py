"""The Kubernetes quick try's OCSP responder (`mtls-authz demo-ocsp-responder`), asked by
`openssl ocsp`, which verifies its answers against the demo root: the Secret that
`k8s-demo-secrets` prints makes the good client good and the revoked client revoked."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import yaml

from authz.demo.k8s_secrets import demo_secrets
from authz.demo.pki import LabPki
from authz.demo.processes import Process, free_port, tcp_open

START_TIMEOUT = 30


def write_secrets(stream: str, directory: Path) -> dict[str, Path]:
    """Each Secret's keys as files in its own directory, as the kubelet mounts them."""
    mounted = {}
    for secret in (s for s in yaml.safe_load_all(stream) if s):
        path = directory / secret["metadata"]["name"]
        path.mkdir(parents=True)
        for key, value in secret["data"].items():
            (path / key).write_bytes(base64.b64decode(value))
        mounted[secret["metadata"]["name"]] = path
    return mounted


def openssl_ocsp(client_dir: Path, name: str, issuer: Path, url: str) -> str:
    done = subprocess.run(
        ["openssl", "ocsp", "-issuer", str(issuer), "-cert", str(client_dir / f"{name}.pem"),
         "-url", url, "-CAfile", str(client_dir / "server-ca.pem"), "-timeout", "10"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert "Response verify OK" in done.stderr, done.stderr
    return done.stdout


def test_openssl_ocsp_gets_good_and_revoked_from_the_demo_secret(
    pki: LabPki, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stream = demo_secrets("demo", [], tmp_path / "client", ocsp_url=url, pki=pki)
    mounted = write_secrets(stream, tmp_path / "secrets")
    argv = [sys.executable, "-m", "authz", "demo-ocsp-responder", "--dir", str(mounted["demo-ocsp"]),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with Process("demo-ocsp", argv, tmp_path / "responder.log") as responder:
        responder.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
        issuer = mounted["demo-ocsp"] / "issuer.pem"
        client = tmp_path / "client"
        assert f"{client}/client.pem: good" in openssl_ocsp(client, "client", issuer, url)
        revoked = openssl_ocsp(client, "revoked", issuer, url)
        assert f"{client}/revoked.pem: revoked" in revoked
        assert "answering for CN=Lab Issuing CA,O=Lab (1 revoked)" in responder.log_text()
