"""The package as users install it: a wheel built from the tree, installed (not editable) into a
fresh virtualenv outside the checkout, and `mtls-authz demo --once` run from another directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from authz import __version__
from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.stack import default_envoy

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "constraints.txt", "authz", "envoy")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources, so the build leaves nothing in the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, src],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_carries_the_envoy_configs_and_the_version(wheel: Path) -> None:
    assert wheel.name == f"mtls_authz-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for shipped in sorted(SHIPPED_ENVOY_DIR.iterdir()):
            inside = f"authz/envoy_configs/{shipped.name}"
            assert inside in names
            # The same bytes as the top-level envoy/ that users read and copy.
            assert archive.read(inside) == (REPO / "envoy" / shipped.name).read_bytes()


def test_the_package_reads_the_top_level_envoy_configs_in_a_checkout() -> None:
    """One copy in the tree: the package's directory is a link to envoy/."""
    assert (REPO / "authz" / "envoy_configs").is_symlink()
    assert SHIPPED_ENVOY_DIR.resolve() == (REPO / "envoy").resolve()


def test_installed_from_the_wheel_the_demo_runs_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    install = subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", REPO / "constraints.txt", wheel],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # No Envoy anywhere: one line saying what to install, not a traceback.
    bare = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    without = subprocess.run(
        [venv / "bin" / "mtls-authz", "demo", "--once"],
        capture_output=True, text=True, timeout=60, cwd=elsewhere, env=bare, check=False,
    )  # fmt: skip
    assert without.returncode == 2 and "Traceback" not in without.stderr
    assert without.stderr.strip().count("\n") == 0, without.stderr
    assert "pip install 'mtls-authz[demo]'" in without.stderr
    # Only Envoy and the system's tools on PATH: nothing of the checkout or its virtualenv.
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "envoy").symlink_to(os.environ.get("AUTHZ_TEST_ENVOY") or default_envoy())
    env = {"PATH": f"{tools}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    version = subprocess.run(
        [venv / "bin" / "mtls-authz", "--version"],
        capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env, check=False,
    )  # fmt: skip
    assert version.stdout.strip() == f"mtls-authz {__version__}"
    done = subprocess.run(
        [venv / "bin" / "mtls-authz", "demo", "--once"],
        capture_output=True, text=True, timeout=180, cwd=elsewhere, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "expectations held" in done.stdout and "FAILED" not in done.stdout
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "authz" / "envoy_configs" / "envoy.yaml").is_file()
    assert not (site / "authz" / "envoy_configs").is_symlink()
