"""The mtls-authz process: start, health, graceful stop, and refusing a bad configuration."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.demo.pki import LabPki, pem_bundle
from authz.demo.processes import Process, free_port, tcp_open

START_TIMEOUT = 30


def start_authz(tmp_path: Path, pki: LabPki, *extra: str) -> tuple[Process, int]:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    port = free_port()
    argv = [
        sys.executable, "-m", "authz", "serve", "--listen", f"127.0.0.1:{port}",
        "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN, *extra,
    ]  # fmt: skip
    process = Process("mtls-authz", argv, tmp_path / "authz.log").start()
    process.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
    return process, port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(sig: signal.Signals, pki: LabPki, tmp_path: Path) -> None:
    process, port = start_authz(tmp_path, pki)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.signal(sig)
        assert process.wait(timeout=15) == 0
        log = process.log_text()
        assert '"message": "draining"' in log and '"message": "stopped"' in log
        assert "Traceback" not in log
    finally:
        process.stop()


def test_startup_log_states_the_effective_configuration(pki: LabPki, tmp_path: Path) -> None:
    process, _ = start_authz(tmp_path, pki, "--log-format", "text")
    try:
        process.wait_until(lambda: "serving" in process.log_text(), START_TIMEOUT, "logged")
        log = process.log_text()
        assert "allowed_issuers" in log and "CN=Lab Issuing CA,O=Lab" in log
        assert "BEGIN" not in log
    finally:
        process.stop()


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", "serve", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def test_bad_flag_value_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    done = run_serve("--trust-bundle", "/x", "--allowed-issuer", "CN=A", "--listen", "nowhere")
    assert done.returncode == 2
    assert "listen (from --listen): expected HOST:PORT" in done.stderr


def test_unreadable_trust_bundle_fails_at_start(tmp_path: Path) -> None:
    done = run_serve(
        "--trust-bundle", str(tmp_path / "none.pem"), "--allowed-issuer", "CN=A",
        "--listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert done.returncode == 2
    assert "none.pem" in done.stderr
