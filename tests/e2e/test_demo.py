"""`mtls-authz demo --once` is the quick start's promise: it must run and hold every expectation."""

from __future__ import annotations

import subprocess
import sys


def test_demo_once_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authz", "demo", "--once"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "expectations held" in done.stdout
    assert "FAILED" not in done.stdout
