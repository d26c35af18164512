"""`serve --workers 2`: one port, two processes, supervised, metrics summed across them."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authz.demo.pki import LabPki, pem_bundle
from authz.demo.processes import Process, free_port, http_ok
from tests.support import envoy_field

WAIT = 30


@pytest.fixture
def supervisor(pki: LabPki, tmp_path: Path) -> Iterator[tuple[Process, int, int]]:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    grpc_port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "authz", "serve", "--workers", "2",
        "--listen", f"127.0.0.1:{grpc_port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
        "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN, "--ocsp", "off",
    ]  # fmt: skip
    process = Process("supervisor", argv, tmp_path / "supervisor.log").start()
    try:
        process.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{metrics_port}/readyz"), WAIT, "ready"
        )
        yield process, grpc_port, metrics_port
    finally:
        process.stop()


def worker_pids(process: Process) -> list[int]:
    lines = [json.loads(line) for line in process.log_text().splitlines() if line.startswith("{")]
    return [line["pid"] for line in lines if line["message"] == "worker started"]


def check_on_new_connections(port: int, request: external_auth_pb2.CheckRequest, count: int) -> int:
    allowed = 0
    for _ in range(count):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)
            allowed += response.HasField("ok_response")
    return allowed


def allowed_total(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        text = page.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mtls_authz_decisions_total" and sample.labels["decision"] == "allow":
                return float(sample.value)
    return 0.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_serve_one_port_and_metrics_add_up(
    supervisor: tuple[Process, int, int], pki: LabPki
) -> None:
    process, grpc_port, metrics_port = supervisor
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.certificate = envoy_field(pki.client("workers").cert)
    assert check_on_new_connections(grpc_port, request, 40) == 40
    # Each worker adds its tally to its metric file every second.
    deadline = time.monotonic() + 5
    while allowed_total(metrics_port) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert allowed_total(metrics_port) == 40
    serving = {
        line["pid"]
        for line in (json.loads(x) for x in process.log_text().splitlines() if x.startswith("{"))
        if line["message"] == "serving"
    }
    assert len(serving) == 2 and all(alive(pid) for pid in serving)


def test_a_dead_worker_is_replaced_and_sigterm_stops_all(
    supervisor: tuple[Process, int, int], pki: LabPki
) -> None:
    process, grpc_port, metrics_port = supervisor
    first, second = worker_pids(process)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while len(worker_pids(process)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    replacement = worker_pids(process)[2]
    assert replacement not in (first, second)
    deadline = time.monotonic() + WAIT
    while not http_ok(f"http://127.0.0.1:{metrics_port}/readyz") and time.monotonic() < deadline:
        time.sleep(0.1)
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.certificate = envoy_field(pki.client("after-restart").cert)
    assert check_on_new_connections(grpc_port, request, 10) == 10

    process.signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert not alive(second) and not alive(replacement)
