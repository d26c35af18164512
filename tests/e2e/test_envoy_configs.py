"""Every Envoy config shipped in envoy/ is accepted by every Envoy version under test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from authz.demo import envoy_config
from authz.demo.pki import LabPki, pem_bundle
from authz.demo.stack import REPO_ENVOY_DIR

CONFIGS = sorted(REPO_ENVOY_DIR.glob("*.yaml"))


def test_there_are_configs_to_check() -> None:
    assert REPO_ENVOY_DIR / "envoy.yaml" in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_envoy_validates_config(config: Path, envoy: str, pki: LabPki, tmp_path: Path) -> None:
    cert, key = pki.server.write(tmp_path, "server")
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(pem_bundle(pki.root.cert))
    rendered = envoy_config.render(
        config,
        listener_ports={},
        admin_port=9901,
        cluster_ports={},
        files={
            envoy_config.SERVER_CERT: cert,
            envoy_config.SERVER_KEY: key,
            envoy_config.CLIENT_CA: client_ca,
        },
    )
    path = envoy_config.write(rendered, tmp_path / config.name)
    done = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration '" in done.stdout and "OK" in done.stdout
