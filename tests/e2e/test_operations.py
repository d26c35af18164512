"""Operating mtls-authz: metrics, readiness, decision logs and hot reload, on a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki, pem_bundle
from authz.demo.processes import Process, free_port, tcp_open
from tests.ocsp_responder import Mode, OcspResponder
from tests.support import envoy_field

WAIT = 15.0


@dataclass
class Running:
    process: Process
    grpc_port: int
    metrics_port: int
    config: Path
    workdir: Path

    def check(self, client: Identity) -> external_auth_pb2.CheckResponse:
        request = external_auth_pb2.CheckRequest()
        request.attributes.source.certificate = envoy_field(client.cert)
        request.attributes.request.http.path = "/ops"
        request.attributes.request.http.headers["x-request-id"] = "req-42"
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)

    def reason(self, client: Identity) -> str:
        response = self.check(client)
        if response.HasField("ok_response"):
            return "allowed"
        return str(json.loads(response.denied_response.body)["error"])

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:  # not listening yet, or reset while starting
            return 0, ""

    def scrape(self) -> str:
        status, text = self.get("/metrics")
        assert status == 200
        return text

    def sample(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.scrape()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def write_config(self, **values: object) -> None:
        config = yaml.safe_load(self.config.read_text())
        config.update(values)
        self.config.write_text(yaml.safe_dump(config))

    def wait_for(self, condition: object, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise AssertionError(f"not {what} after {WAIT}s:\n{self.process.log_text()[-2000:]}")


def start(workdir: Path, config: dict[str, object]) -> Running:
    grpc_port, metrics_port = free_port(), free_port()
    config_path = workdir / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{grpc_port}",
                "metrics_listen": f"127.0.0.1:{metrics_port}",
                **config,
            }
        )
    )
    argv = [sys.executable, "-m", "authz", "serve", "--config", str(config_path)]
    process = Process("mtls-authz", argv, workdir / "authz.log").start()
    running = Running(process, grpc_port, metrics_port, config_path, workdir)
    process.wait_until(lambda: running.get("/readyz")[0] == 200, 30, "ready")
    return running


@pytest.fixture
def with_ocsp(pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path) -> Iterator[Running]:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert, pki.other.cert))
    running = start(
        tmp_path,
        {
            "trust_bundle": str(bundle),
            "allowed_issuers": [LabPki.ISSUING_DN],
            "ocsp_responders": [f"{LabPki.ISSUING_DN}={fresh_responder.url}"],
            "ocsp_timeout": 3,
            "shutdown_grace": 10,
        },
    )
    try:
        yield running
    finally:
        running.process.stop()


def test_metrics_move_with_decisions_ocsp_and_cache(
    with_ocsp: Running, fresh_responder: OcspResponder, pki: LabPki
) -> None:
    ops = with_ocsp
    responder = f"127.0.0.1:{fresh_responder.port}"
    good, revoked, failing = (pki.client(n) for n in ("m-good", "m-revoked", "m-failing"))
    fresh_responder.revoke(revoked.cert.serial_number)

    assert ops.reason(good) == "allowed"
    assert ops.reason(good) == "allowed"
    assert ops.reason(revoked) == "certificate_revoked"
    assert ops.reason(pki.client("m-other", pki.other)) == "issuer_not_allowed"
    fresh_responder.mode = Mode.HTTP_500
    assert ops.reason(failing) == "revocation_check_failed"

    allowed = ops.sample("mtls_authz_decisions_total", decision="allow", reason="none")
    assert allowed == 2
    for reason in ("certificate_revoked", "issuer_not_allowed", "revocation_check_failed"):
        assert ops.sample("mtls_authz_decisions_total", decision="deny", reason=reason) == 1
    for outcome in ("good", "revoked", "http_error"):
        assert (
            ops.sample("mtls_authz_ocsp_requests_total", responder=responder, outcome=outcome) == 1
        )
    assert ops.sample("mtls_authz_ocsp_cache_lookups_total", result="miss") == 3
    assert ops.sample("mtls_authz_ocsp_cache_lookups_total", result="hit") == 1
    assert ops.sample("mtls_authz_ocsp_cache_entries") == 3
    assert ops.sample("mtls_authz_check_duration_seconds_count") == 5
    assert ops.sample("mtls_authz_ocsp_request_duration_seconds_count", responder=responder) == 3
    assert ops.sample("mtls_authz_trust_bundle_certificates") == 3
    assert ops.sample("mtls_authz_build_info") == 1

    done = subprocess.run(
        ["promtool", "check", "metrics"], input=ops.scrape().encode(),
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_deny_log_line_has_the_fields_and_no_certificate(with_ocsp: Running, pki: LabPki) -> None:
    client = pki.client("log-other", pki.other)
    assert with_ocsp.reason(client) == "issuer_not_allowed"
    with_ocsp.wait_for(lambda: "issuer_not_allowed" in with_ocsp.process.log_text(), "logged")
    lines = [json.loads(line) for line in with_ocsp.process.log_text().splitlines()]
    (deny,) = [line for line in lines if line.get("reason") == "issuer_not_allowed"]
    assert deny["decision"] == "deny"
    assert deny["request_id"] == "req-42"
    assert deny["path"] == "/ops"
    assert deny["subject"] == "CN=log-other,O=Lab"
    assert deny["issuer"] == "CN=Lab Other CA,O=Lab"
    assert deny["serial"] == format(client.cert.serial_number, "x")
    assert deny["sha256"] == client.cert.fingerprint(hashes.SHA256()).hex()
    log = with_ocsp.process.log_text()
    assert "BEGIN CERTIFICATE" not in log
    assert client.cert.public_bytes(Encoding.DER).hex()[:64] not in log


def test_ocsp_failure_is_logged_with_outcome_and_latency(
    with_ocsp: Running, fresh_responder: OcspResponder, pki: LabPki
) -> None:
    fresh_responder.mode = Mode.GARBAGE
    assert with_ocsp.reason(pki.client("log-fail")) == "revocation_check_failed"
    with_ocsp.wait_for(lambda: "OCSP check failed" in with_ocsp.process.log_text(), "logged")
    lines = [json.loads(line) for line in with_ocsp.process.log_text().splitlines()]
    (failure,) = [line for line in lines if line["message"] == "OCSP check failed"]
    assert failure["ocsp_outcome"] == "unparsable"
    assert failure["ocsp_latency"] >= 0
    (deny,) = [line for line in lines if line.get("reason") == "revocation_check_failed"]
    assert deny["ocsp_outcome"] == "unparsable"


def test_readiness_follows_serving_and_draining(
    with_ocsp: Running, fresh_responder: OcspResponder, pki: LabPki
) -> None:
    ops = with_ocsp
    with grpc.insecure_channel(f"127.0.0.1:{ops.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert ops.get("/readyz")[0] == 200 and ops.get("/healthz")[0] == 200

    fresh_responder.delay = 2.0
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(ops.reason(pki.client("drain"))))
    worker.start()
    time.sleep(0.5)  # the Check is waiting on the responder
    ops.process.signal(signal.SIGTERM)
    ops.wait_for(lambda: ops.get("/readyz")[0] == 503, "draining")
    assert ops.process.poll() is None  # still finishing the in-flight Check
    assert ops.get("/healthz")[0] == 200
    worker.join(10)
    assert result == ["allowed"]
    assert ops.process.wait(timeout=15) == 0


# -- reload -----------------------------------------------------------------------------------


@pytest.fixture
def policy_only(pki: LabPki, tmp_path: Path) -> Iterator[Running]:
    """Revocation off: these tests are about issuers and bundles."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    running = start(
        tmp_path,
        {
            "trust_bundle": str(bundle),
            "allowed_issuers": [LabPki.ISSUING_DN],
            "revocation_mode": "off",
        },
    )
    try:
        yield running
    finally:
        running.process.stop()


def reloads(ops: Running, result: str) -> float:
    return ops.sample("mtls_authz_config_reloads_total", result=result)


def test_sighup_reload_changes_decisions_without_restart(policy_only: Running, pki: LabPki) -> None:
    ops = policy_only
    other = pki.client("reload-other", pki.other)
    assert ops.reason(other) == "issuer_not_allowed"
    bundle = Path(yaml.safe_load(ops.config.read_text())["trust_bundle"])
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert, pki.other.cert))
    ops.write_config(allowed_issuers=[LabPki.ISSUING_DN, LabPki.OTHER_DN])
    pid = ops.process.pid
    ops.process.signal(signal.SIGHUP)
    ops.wait_for(lambda: reloads(ops, "success") >= 1, "reloaded")
    assert ops.reason(other) == "allowed"
    assert ops.process.pid == pid and ops.process.poll() is None
    assert ops.sample("mtls_authz_trust_bundle_certificates") == 3


def test_kubernetes_style_symlink_swap_is_picked_up(pki: LabPki, tmp_path: Path) -> None:
    # /etc/ca/bundle.pem -> ..data/bundle.pem, ..data -> ..v1: Kubernetes swaps ..data atomically.
    mount = tmp_path / "ca"
    (mount / "..v1").mkdir(parents=True)
    (mount / "..v1" / "bundle.pem").write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    (mount / "..data").symlink_to("..v1")
    (mount / "bundle.pem").symlink_to("..data/bundle.pem")
    ops = start(
        tmp_path,
        {
            "trust_bundle": str(mount / "bundle.pem"),
            "allowed_issuers": [LabPki.ISSUING_DN, LabPki.OTHER_DN],
            "revocation_mode": "off",
        },
    )
    try:
        other = pki.client("swap-other", pki.other)
        assert ops.reason(other) == "issuer_unknown"
        (mount / "..v2").mkdir()
        (mount / "..v2" / "bundle.pem").write_bytes(
            pem_bundle(pki.root.cert, pki.issuing.cert, pki.other.cert)
        )
        (mount / "..data_tmp").symlink_to("..v2")
        os.replace(mount / "..data_tmp", mount / "..data")
        ops.wait_for(lambda: ops.reason(other) == "allowed", "using the new bundle")
        assert reloads(ops, "success") == 1
    finally:
        ops.process.stop()


@pytest.mark.parametrize("broken", ["config", "bundle"])
def test_a_broken_file_keeps_the_old_state(policy_only: Running, pki: LabPki, broken: str) -> None:
    ops = policy_only
    good = pki.client("keep-good")
    assert ops.reason(good) == "allowed"
    if broken == "config":
        ops.config.write_text("allowed_issuers: [unclosed\n")
    else:
        Path(yaml.safe_load(ops.config.read_text())["trust_bundle"]).write_text("not pem")
    ops.process.signal(signal.SIGHUP)
    ops.wait_for(lambda: reloads(ops, "error") >= 1, "reload refused")
    assert ops.reason(good) == "allowed"
    assert ops.reason(pki.client("keep-other", pki.other)) == "issuer_not_allowed"
    assert "reload failed; keeping the previous configuration" in ops.process.log_text()


def test_reload_drops_cached_answers_for_issuers_that_left_the_bundle(
    with_ocsp: Running, pki: LabPki
) -> None:
    ops = with_ocsp
    assert ops.reason(pki.client("prune")) == "allowed"
    assert ops.sample("mtls_authz_ocsp_cache_entries") == 1
    bundle = Path(yaml.safe_load(ops.config.read_text())["trust_bundle"])
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.other.cert))
    ops.process.signal(signal.SIGHUP)
    ops.wait_for(lambda: reloads(ops, "success") >= 1, "reloaded")
    assert ops.sample("mtls_authz_ocsp_cache_entries") == 0
    assert ops.reason(pki.client("prune-2")) == "issuer_unknown"


def test_an_answer_from_a_responder_no_longer_configured_is_not_served_after_reload(
    pki: LabPki, tmp_path: Path
) -> None:
    """Both responders are `openssl ocsp` for the same CA; only the new one knows the revocation."""
    client = pki.client("moved-responder")
    before, after = (
        OpensslCa(tmp_path / "before", pki.issuing),
        OpensslCa(tmp_path / "after", pki.issuing),
    )
    before.add_valid(client)
    after.revoke(client)
    with (
        OpensslResponder(before, tmp_path / "before.log") as old,
        OpensslResponder(after, tmp_path / "after.log") as new,
    ):
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
        ops = start(
            tmp_path,
            {
                "trust_bundle": str(bundle),
                "allowed_issuers": [LabPki.ISSUING_DN],
                "ocsp_responders": [f"{LabPki.ISSUING_DN}={old.url}"],
            },
        )
        try:
            assert ops.reason(client) == "allowed"
            ops.write_config(ocsp_responders=[f"{LabPki.ISSUING_DN}={new.url}"])
            ops.process.signal(signal.SIGHUP)
            ops.wait_for(lambda: reloads(ops, "success") >= 1, "reloaded")
            assert ops.reason(client) == "certificate_revoked"
            assert ops.sample("mtls_authz_ocsp_cache_entries") == 1  # the old answer is gone
        finally:
            ops.process.stop()


def test_startup_is_not_ready_until_serving(pki: LabPki, tmp_path: Path) -> None:
    """Poll from the first instant: /readyz must never say ready before gRPC answers."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert))
    grpc_port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "authz", "serve", "--listen", f"127.0.0.1:{grpc_port}",
        "--metrics-listen", f"127.0.0.1:{metrics_port}", "--trust-bundle", str(bundle),
        "--allowed-issuer", LabPki.ISSUING_DN,
    ]  # fmt: skip
    process = Process("mtls-authz", argv, tmp_path / "authz.log").start()
    ops = Running(process, grpc_port, metrics_port, tmp_path / "none", tmp_path)
    try:
        seen_ready = False
        deadline = time.monotonic() + 30
        while not seen_ready and time.monotonic() < deadline:
            if tcp_open(metrics_port) and ops.get("/readyz")[0] == 200:
                seen_ready = True
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5
                    )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(0.01)
        assert seen_ready
    finally:
        process.stop()


def test_a_reload_says_which_changes_need_a_restart_and_keeps_them_out(
    policy_only: Running, pki: LabPki
) -> None:
    """A changed http_listen or workers cannot be applied by a reload: one warning names them,
    and the `reloaded` line shows what is in effect — the values the process started with —
    while the rest of the reload is applied."""
    new_port = free_port()
    policy_only.write_config(http_listen=f"127.0.0.1:{new_port}", workers=2, deny_status=403)
    policy_only.process.signal(signal.SIGHUP)
    policy_only.wait_for(lambda: reloads(policy_only, "success") >= 1, "reloaded")
    lines = [
        json.loads(line)
        for line in policy_only.process.log_text().splitlines()
        if line.startswith("{")
    ]
    (warning,) = [
        line for line in lines if line["message"].startswith("changed settings need a restart")
    ]
    assert warning["keys"] == ["http_listen", "workers"]
    (reloaded,) = [line for line in lines if line["message"] == "reloaded"]
    assert reloaded["config"]["http_listen"] == "" and reloaded["config"]["workers"] == 1
    assert reloaded["config"]["deny_status"] == 403
    assert not tcp_open(new_port)
    response = policy_only.check(pki.client("reload-restart", pki.other))
    assert response.denied_response.status.code == 403  # the rest was applied
