"""End-to-end fixtures: the real Envoy (every version under test), mtls-authz and curl."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.demo import envoy_config
from authz.demo.openssl_ocsp import OpensslCa
from authz.demo.pki import Identity, LabPki, pem_bundle
from authz.demo.processes import Process, free_port, http_ok
from authz.demo.stack import LocalStack, default_envoy
from tests.ocsp_responder import OcspResponder


def envoy_binaries() -> list[str]:
    """`AUTHZ_TEST_ENVOYS` (space-separated paths; `make test` sets the oldest and newest)."""
    return os.environ.get("AUTHZ_TEST_ENVOYS", "").split() or [default_envoy()]


def envoy_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    match = re.search(r"/(\d+\.\d+\.\d+)/", out)
    assert match, out
    return match.group(1)


ENVOYS = {envoy_version(binary): binary for binary in envoy_binaries()}


@pytest.fixture(scope="module", params=sorted(ENVOYS), ids=lambda v: f"envoy-{v}")
def envoy(request: pytest.FixtureRequest) -> str:
    return ENVOYS[request.param]


@pytest.fixture(scope="module")
def stack(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """The gateway as shipped; Envoy also trusts the foreign root, so policy is mtls-authz's alone."""
    with LocalStack(
        tmp_path_factory.mktemp("stack"),
        pki,
        envoy_binary=envoy,
        envoy_trusted=(pki.root, pki.foreign_root),
        ocsp_override=responder.url,
    ) as running:
        yield running


def backend_saw(stack: LocalStack, path: str) -> bool:
    return f" {path}\n" in (stack.workdir / "echo.log").read_text()


def newest_envoy() -> str:
    return ENVOYS[max(ENVOYS, key=lambda v: tuple(int(p) for p in v.split(".")))]


def envoy_validate(
    envoy: str, template: Path, pki: LabPki, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on a shipped config, its certificate paths pointed at test files."""
    cert, key = pki.server.write(workdir, "server")
    client_ca = workdir / "client-ca.pem"
    client_ca.write_bytes(pem_bundle(pki.root.cert))
    rendered = envoy_config.render(
        template,
        listener_ports={},
        admin_port=9901,
        cluster_ports={},
        files={
            envoy_config.SERVER_CERT: cert,
            envoy_config.SERVER_KEY: key,
            envoy_config.CLIENT_CA: client_ca,
        },
    )
    path = envoy_config.write(rendered, workdir / f"validate-{template.name}")
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


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
