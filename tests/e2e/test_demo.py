"""`mtls-authz demo --once` is the quick start's promise: it must run and hold every expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_demo_once_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authz", "demo", "--once"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "expectations held" in done.stdout
    assert "FAILED" not in done.stdout


@pytest.mark.parametrize(
    "variant",
    [["--http"], ["--replicas", "2", "--shared-cache"]],
    ids=["http", "replicas-shared-cache"],
)
def test_the_demo_s_variants_hold_their_expectations(variant: list[str]) -> None:
    """What a newcomer wants to see next: the HTTP transport, replicas sharing a redis-server."""
    done = subprocess.run(
        [sys.executable, "-m", "authz", "demo", "--once", *variant],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout and "expectations held" in done.stdout
    if "--shared-cache" in variant:
        assert "answers read from the shared cache" in done.stdout


def test_keep_leaves_the_pki_configs_and_logs_to_try_by_hand(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    done = subprocess.run(
        [sys.executable, "-m", "authz", "demo", "--once", "--keep", str(kept)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for path in ("envoy.yaml", "trust-bundle.pem", "tls/server-ca.pem", "ca/index.txt"):
        assert (kept / path).is_file(), path
    assert len(list((kept / "clients").glob("*.key"))) == 3
    assert f"Kept in {kept}" in done.stdout


def test_shared_cache_without_replicas_says_what_to_add() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authz", "demo", "--once", "--shared-cache"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "add --replicas 2" in done.stderr
    assert "Traceback" not in done.stderr
