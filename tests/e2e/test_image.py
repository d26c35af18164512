"""The container image, built by `make image` (buildah) and run for real with `buildah run`.

Its own entrypoint serves the shipped Kubernetes `config.yaml` mounted read-only, as the
Deployment mounts it; a real Envoy in front and curl with client certificates from `openssl ca`,
checked by `openssl ocsp`, get good → 200 and revoked → 400 from outside the container. The
image runs as uid 10001, holds no compiler and leaves its user nothing to write.

`make test` builds the image and names it in AUTHZ_TEST_IMAGE; without it these tests are
skipped (they need buildah and the image, which a bare `pytest` has not built).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz import __version__
from authz.demo.k8s_secrets import demo_secrets
from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki, pem_bundle
from authz.demo.processes import Process, free_port, http_ok, tcp_open
from authz.demo.stack import START_TIMEOUT, LocalStack, curl
from tests.e2e.conftest import backend_saw, newest_envoy
from tests.e2e.test_demo_responder import write_secrets
from tests.e2e.test_kubernetes import container as k8s_container
from tests.e2e.test_kubernetes import kustomize

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("AUTHZ_TEST_IMAGE", "")
CONFIG_DIR = "/etc/mtls-authz"
BUILDAH_TIMEOUT = 120

pytestmark = pytest.mark.skipif(
    not IMAGE, reason="AUTHZ_TEST_IMAGE names no image (`make test` builds one)"
)


def buildah(*args: str) -> str:
    done = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=BUILDAH_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
    return done.stdout


def run_argv(container: str, *command: str, volumes: dict[Path, str] | None = None) -> list[str]:
    """`buildah run` as the image's own user (USER), with read-only mounts."""
    mounts = [f"--volume={host}:{inside}:ro" for host, inside in (volumes or {}).items()]
    return ["buildah", "run", "--isolation", "chroot", *mounts, container, "--", *command]


def run_in(container: str, *command: str, volumes: dict[Path, str] | None = None) -> str:
    done = subprocess.run(
        run_argv(container, *command, volumes=volumes),
        capture_output=True, text=True, timeout=BUILDAH_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def image_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", IMAGE))["OCIv1"]
    return config


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the image (buildah's unit for `run`), removed afterwards."""
    name = f"mtls-authz-test-{os.getpid()}"
    buildah("from", "--pull-never", "--name", name, IMAGE)
    try:
        yield name
    finally:
        buildah("rm", name)


def test_the_image_says_what_it_is_and_how_it_starts(image_config: dict[str, Any]) -> None:
    config = image_config["config"]
    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    assert config["Labels"]["org.opencontainers.image.title"] == "mtls-authz"
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["mtls-authz", "serve", "--config", f"{CONFIG_DIR}/config.yaml"]
    assert set(config["ExposedPorts"]) == {"9191/tcp", "9102/tcp"}


def test_the_command_in_the_image_is_this_version(container: str) -> None:
    assert run_in(container, "mtls-authz", "--version").split() == ["mtls-authz", __version__]


def test_it_runs_as_uid_10001_with_no_compiler_and_no_package_installer(container: str) -> None:
    assert run_in(container, "sh", "-c", "id -u; id -g").split() == ["10001", "10001"]
    tools = "gcc cc c++ g++ clang tcc ld as make pip pip3 apt-get"
    found = run_in(
        container, "sh", "-c", f"for t in {tools}; do command -v $t || true; done; "
        "ls /usr/bin /usr/local/bin /opt/mtls-authz/bin | grep -E '^(gcc|cc|x86_64.*-gcc)' || true",
    )  # fmt: skip
    # apt-get is part of Debian's base, useless to uid 10001 (it needs root); nothing else.
    assert [line for line in found.split() if not line.endswith("/apt-get")] == []


def test_its_user_can_write_nowhere_not_even_in_its_mounts(container: str, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("listen: 127.0.0.1:9191\n")
    writable = run_in(
        container, "sh", "-c",
        "find / -xdev -writable 2>/dev/null; "
        f"touch {CONFIG_DIR}/probe 2>/dev/null && echo {CONFIG_DIR}/probe; true",
        volumes={tmp_path: CONFIG_DIR},
    )  # fmt: skip
    assert writable.split() == []
    assert not (tmp_path / "probe").exists()


class ImageStack(LocalStack):
    """The local stack with mtls-authz run from the image: its entrypoint, the shipped
    `deploy/k8s/base/config.yaml` and the CA bundle mounted read-only where the Deployment mounts
    them; only the listen addresses and the responder differ, given as arguments the way a
    Deployment's `args:` would."""

    container: str = ""
    entrypoint: list[str]
    ca_bundle: bytes = b""
    """The mounted `ca-bundle.pem`; default: the lab root and issuing CA."""

    def authz_argv(self) -> list[str]:
        etc = self.workdir / "etc-mtls-authz"
        (etc / "ca").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "deploy" / "k8s" / "base" / "config.yaml", etc / "config.yaml")
        bundle = self.ca_bundle or pem_bundle(self.pki.root.cert, self.pki.issuing.cert)
        (etc / "ca" / "ca-bundle.pem").write_bytes(bundle)
        self.metrics_port = free_port()
        args = [
            "--listen", f"127.0.0.1:{self.ports['authz']}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            *self.authz_args,
        ]  # fmt: skip
        return run_argv(self.container, *self.entrypoint, *args, volumes={etc: CONFIG_DIR})


def serving_process(port: int) -> int:
    """The pid of the image's `mtls-authz serve` (as seen from the host) listening on `port`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = b"serve" in argv and f"127.0.0.1:{port}".encode() in argv
        if ours and argv[0].endswith(b"python3"):  # not buildah, not its chroot helper
            return int(proc.name)
    raise AssertionError(f"no mtls-authz serve process for port {port}")


def uids(pid: int) -> list[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = re.findall(r"^Uid:\s+(.+)$", status, re.MULTILINE)
    return line.split()


@pytest.fixture(scope="module")
def clients(pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Clients issued by `openssl ca` under the lab issuing CA, answered for by `openssl ocsp`."""
    workdir = tmp_path_factory.mktemp("image-pki")
    ca = OpensslCa(workdir / "ca", pki.issuing)
    with OpensslResponder(ca, workdir / "ocsp.log") as responder:
        good = ca.issue("image-good", ocsp_url=responder.url)
        revoked = ca.issue("image-revoked", ocsp_url=responder.url)
        ca.revoke(revoked)
        responder.restart()
        yield {"good": good, "revoked": revoked, "responder": responder}


def test_the_entrypoint_serves_the_mounted_config_and_answers_checks_from_outside(
    container: str,
    image_config: dict[str, Any],
    pki: LabPki,
    clients: dict[str, Any],
    tmp_path: Path,
) -> None:
    stack = ImageStack(tmp_path, pki, envoy_binary=newest_envoy())
    stack.container = container
    stack.entrypoint = image_config["config"]["Entrypoint"]
    good: Identity = clients["good"]
    revoked: Identity = clients["revoked"]
    with stack:
        ok = stack.curl(good, "/from-image/good")
        assert ok.status == 200, ok.body
        echoed = ok.json()["headers"]
        assert echoed["x-mtls-authz-revocation"] == ["good"]
        assert echoed["x-client-cert"] == [
            base64.b64encode(good.cert.public_bytes(Encoding.DER)).decode()
        ]
        refused = stack.curl(revoked, "/from-image/revoked")
        assert refused.status == 400
        assert refused.headers["x-mtls-authz-reason"] == "certificate_revoked"
        assert not backend_saw(stack, "/from-image/revoked")
        assert http_ok(f"http://127.0.0.1:{stack.metrics_port}/readyz")

        pid = serving_process(stack.ports["authz"])
        assert uids(pid) == ["10001"] * 4  # real, effective, saved, filesystem
        # Kubernetes stops a container with SIGTERM to its process: it drains and exits.
        os.kill(pid, signal.SIGTERM)
        assert stack.authz is not None
        deadline = time.monotonic() + START_TIMEOUT
        while stack.authz.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        log = stack.authz.log_text()
        assert '"message": "draining"' in log and '"message": "stopped"' in log, log[-2000:]
        assert "Traceback" not in log


def test_the_kubernetes_quick_try_in_miniature(
    container: str, image_config: dict[str, Any], pki: LabPki, tmp_path: Path
) -> None:
    """What `kubectl apply -k deploy/k8s/overlays/quick-try` runs, without the cluster: the
    Secrets of `k8s-demo-secrets` as mounted files, the demo responder run from the image with
    the overlay's own command, mtls-authz from the image; the demo clients through a real Envoy:
    client.pem → 200, revoked.pem → 400 certificate_revoked."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clients = tmp_path / "demo-client"
    mounted = write_secrets(
        demo_secrets("demo", [], clients, ocsp_url=url, pki=pki), tmp_path / "secrets"
    )
    objects = kustomize(REPO / "deploy" / "k8s" / "overlays" / "quick-try")
    _, spec = k8s_container(objects, "ocsp-responder")
    (mount,) = spec["volumeMounts"]
    command = [*spec["command"], "--host", "127.0.0.1", "--port", str(port)]
    responder = Process(
        "demo-ocsp",
        run_argv(container, *command, volumes={mounted["demo-ocsp"]: mount["mountPath"]}),
        tmp_path / "responder.log",
    )
    stack = ImageStack(tmp_path / "stack", pki, envoy_binary=newest_envoy())
    stack.container, stack.entrypoint = container, image_config["config"]["Entrypoint"]
    stack.ca_bundle = (mounted["mtls-ca"] / "ca-bundle.pem").read_bytes()
    server_ca = stack.workdir / "tls" / "server-ca.pem"
    with responder, stack:
        responder.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
        good = curl(stack.url + "/quick-try", stack.workdir, server_ca,
                    (clients / "client.pem", clients / "client.key"))  # fmt: skip
        assert good.status == 200, good.body
        assert good.json()["headers"]["x-mtls-authz-revocation"] == ["good"]
        revoked = curl(stack.url + "/quick-try", stack.workdir, server_ca,
                       (clients / "revoked.pem", clients / "revoked.key"))  # fmt: skip
        assert revoked.status == 400
        assert revoked.headers["x-mtls-authz-reason"] == "certificate_revoked"
