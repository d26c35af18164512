"""Every Envoy config shipped in envoy/ is accepted by every Envoy version under test."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.pki import LabPki
from tests.e2e.conftest import envoy_validate

CONFIGS = sorted(SHIPPED_ENVOY_DIR.glob("*.yaml"))


def test_there_are_configs_to_check() -> None:
    assert SHIPPED_ENVOY_DIR / "envoy.yaml" in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_envoy_validates_config(config: Path, envoy: str, pki: LabPki, tmp_path: Path) -> None:
    done = envoy_validate(envoy, config, pki, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration '" in done.stdout and "OK" in done.stdout
