"""The container image's recipe, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]


def test_base_image_is_pinned_by_version() -> None:
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    name, _, tag = default.partition(":")
    assert name == "python"
    assert re.match(r"^3\.\d+\.\d+-slim", tag), tag
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages())


def test_multi_stage_and_runtime_has_no_compiler() -> None:
    assert len(stages()) == 2
    runtime = stages()[-1]
    for tool in ("gcc", "build-essential", "apt-get install", "make "):
        assert tool not in runtime
    # The runtime takes the first stage's virtualenv and installs nothing itself.
    assert "COPY --from=build /opt/mtls-authz /opt/mtls-authz" in runtime
    assert "pip install" not in runtime


def test_runs_as_a_non_root_user() -> None:
    (user,) = re.findall(r"^USER (\S+)$", stages()[-1], re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000


def test_oci_labels() -> None:
    for label in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in DOCKERFILE


def test_build_context_is_limited() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*"  # everything excluded, then what is needed
    assert {"!pyproject.toml", "!constraints.txt", "!authz/"} <= set(ignore)
    for needed in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE):
        for path in needed.split():
            assert (
                f"!{path.rstrip('/')}" in ignore or f"!{path}" in ignore or f"!{path}/" in ignore
            ), path


def test_one_version_for_the_command_the_package_and_the_image_label() -> None:
    """`authz.__version__` is the one place; the installed distribution and the image's default
    label agree with it, and the changelog has a section for it."""
    from importlib.metadata import version

    from authz import __version__

    assert version("mtls-authz") == __version__
    assert 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text()
    (label,) = re.findall(r"^ARG VERSION=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert label == __version__
    assert f"## [{__version__}]" in (REPO / "CHANGELOG.md").read_text()


def test_each_overlay_names_the_image_in_one_entry_users_edit() -> None:
    """`images:` in the overlay is the one edit (no standalone kustomize): it must name the image
    the manifests use, at this version."""
    import yaml

    from authz import __version__

    manifests = (REPO / "deploy" / "k8s").rglob("*deployment.yaml")
    used = {
        line.split("image:")[1].strip().rpartition(":")[0]
        for path in manifests
        for line in path.read_text().splitlines()
        if "image:" in line and "mtls-authz" in line
    }
    assert used == {"ghcr.io/mtls-authz/mtls-authz"}
    for overlay in ("sidecar", "shared", "quick-try"):
        kustomization = yaml.safe_load(
            (REPO / "deploy" / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        (entry,) = kustomization["images"]
        assert entry["name"] in used and entry["newTag"] == __version__
