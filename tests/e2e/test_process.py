"""The mtls-authz process: start, health, graceful stop, and refusing a bad configuration."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.demo.pki import LabPki, pem_bundle
from authz.demo.processes import Process, free_port, tcp_open
from tests.support import envoy_field

START_TIMEOUT = 30


def start_authz(
    tmp_path: Path, pki: LabPki, *extra: str, wait_port: int | None = None
) -> tuple[Process, int]:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    port = free_port()
    argv = [
        sys.executable, "-m", "authz", "serve", "--listen", f"127.0.0.1:{port}",
        "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN, *extra,
    ]  # fmt: skip
    process = Process("mtls-authz", argv, tmp_path / "authz.log").start()
    ready = wait_port or port
    process.wait_until(lambda: tcp_open(ready), START_TIMEOUT, "listening")
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


def test_http_transport_drains_in_flight_checks_on_sigterm(pki: LabPki, tmp_path: Path) -> None:
    """A check waiting on a slow responder when SIGTERM arrives is still answered; then exit 0."""
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import socket, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', int(__import__('sys').argv[1]))); s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept(); time.sleep(1.5); c.close()\n"
    )
    responder_port, http_port = free_port(), free_port()
    responder = Process("slow responder", [sys.executable, str(slow), str(responder_port)],
                        tmp_path / "slow.log").start()  # fmt: skip
    responder.wait_until(lambda: tcp_open(responder_port), START_TIMEOUT, "listening")
    extra = ["--listen", "", "--http-listen", f"127.0.0.1:{http_port}",
             "--ocsp-responder", f"{LabPki.ISSUING_DN}=http://127.0.0.1:{responder_port}/"]  # fmt: skip
    process, _ = start_authz(tmp_path, pki, *extra, wait_port=http_port)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        certificate = envoy_field(pki.client("drain").cert)
        connection.request("GET", "/check/drain", headers={"x-mtls-authz-peer-cert": certificate})
        time.sleep(0.3)  # the check is waiting on the responder
        process.signal(signal.SIGTERM)
        response = connection.getresponse()
        assert response.status == 503  # the responder closed without answering: fail closed
        assert json.loads(response.read())["error"] == "revocation_check_failed"
        assert process.wait(timeout=15) == 0
        assert "Traceback" not in process.log_text()
    finally:
        process.stop()
        responder.stop()
