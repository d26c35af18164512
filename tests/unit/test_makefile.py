"""What `make demo` would do (dry run): only what the demo runs, nothing of the test toolchain."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_make_demo_installs_only_the_package_one_envoy_openssl_and_curl() -> None:
    # Independent of a make this runs under (`make test` passes MAKEFLAGS and MAKELEVEL down).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "demo"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    plan = done.stdout
    assert "install -c constraints.txt '.[demo]'" in plan
    for unwanted in ("[dev]", "promtool", "prometheus", "kubectl", "npm", "envoy-1.36"):
        assert unwanted not in plan, unwanted
    assert "curl:curl openssl:openssl" in plan
    assert plan.rstrip().endswith(".venv-demo/bin/mtls-authz demo")
