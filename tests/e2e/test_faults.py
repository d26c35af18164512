"""Faults through the real Envoy: broken responders, mtls-authz killed mid-traffic, a broken
reload under load. Whatever happens, no request reaches the backend unless the policy allows it."""

from __future__ import annotations

import base64
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.pki import Identity, LabPki
from authz.demo.stack import LocalStack
from tests.e2e.conftest import newest_envoy
from tests.ocsp_responder import Mode, OcspResponder
from tests.traffic import Client, Result, run_traffic


def der_b64(identity: Identity) -> str:
    return base64.b64encode(identity.cert.public_bytes(Encoding.DER)).decode()


@pytest.fixture
def stack(pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path) -> Iterator[LocalStack]:
    args = ["--ocsp-timeout", "1", "--revocation-failure-cache", "1", "--ocsp-cache-max-age", "1"]
    with LocalStack(
        tmp_path, pki, envoy_binary=newest_envoy(), authz_args=args,
        ocsp_override=fresh_responder.url,
    ) as running:  # fmt: skip
        yield running


@pytest.mark.parametrize(
    ("mode", "delay"),
    [(Mode.HTTP_500, 0.0), (Mode.GARBAGE, 0.0), (Mode.TRY_LATER, 0.0), (Mode.NORMAL, 1.5)],
)
def test_broken_responder_means_503_never_a_pass(
    stack: LocalStack, fresh_responder: OcspResponder, pki: LabPki, mode: Mode, delay: float
) -> None:
    fresh_responder.mode, fresh_responder.delay = mode, delay
    result = stack.curl(pki.client(f"fault-{mode}-{delay}"), "/fault")
    assert result.status == 503
    assert result.headers["x-mtls-authz-reason"] == "revocation_check_failed"


def test_flapping_responder_gives_only_right_answers(
    stack: LocalStack, fresh_responder: OcspResponder, pki: LabPki
) -> None:
    good, revoked = pki.client("flap-good"), pki.client("flap-revoked")
    fresh_responder.revoke(revoked.cert.serial_number)
    stop = threading.Event()

    def flap() -> None:
        while not stop.wait(0.3):
            fresh_responder.mode = (
                Mode.HTTP_500 if fresh_responder.mode is Mode.NORMAL else Mode.NORMAL
            )

    flapper = threading.Thread(target=flap)
    flapper.start()
    try:
        clients = [
            Client(
                "good",
                good,
                stack.ports["listen"],
                stack.workdir / "tls" / "server-ca.pem",
                stack.workdir,
            ),
            Client(
                "revoked",
                revoked,
                stack.ports["listen"],
                stack.workdir / "tls" / "server-ca.pem",
                stack.workdir,
            ),
        ]
        results = run_traffic(clients, 4.0)
    finally:
        stop.set()
        flapper.join()
    outcomes = Counter((r.client, r.status, r.reason) for r in results)
    allowed = {("good", 200, ""), ("good", 503, "revocation_check_failed"),
               ("revoked", 400, "certificate_revoked"), ("revoked", 503, "revocation_check_failed")}  # fmt: skip
    assert set(outcomes) <= allowed, outcomes
    assert outcomes[("good", 200, "")] > 0 and outcomes[("revoked", 400, "certificate_revoked")] > 0
    assert all(r.forwarded_cert == der_b64(good) for r in results if r.status == 200)


def test_mtls_authz_killed_and_restarted_while_traffic_flows(
    stack: LocalStack, pki: LabPki
) -> None:
    good, other = pki.client("kill-good"), pki.client("kill-other", pki.other)
    ca = stack.workdir / "tls" / "server-ca.pem"
    clients = [
        Client(f"good-{i}", good, stack.ports["listen"], ca, stack.workdir) for i in range(3)
    ] + [Client("other", other, stack.ports["listen"], ca, stack.workdir)]
    outcome: list[list[Result]] = []
    traffic = threading.Thread(target=lambda: outcome.append(run_traffic(clients, 6.0)))
    traffic.start()
    time.sleep(1.0)
    assert stack.authz is not None
    stack.authz.signal(signal.SIGKILL)
    stack.authz.wait(timeout=10)
    time.sleep(1.5)
    stack.start_authz()
    traffic.join(60)
    results = outcome[0]
    statuses = Counter((r.client.split("-")[0], r.status) for r in results)
    assert set(statuses) <= {("good", 200), ("good", 503), ("other", 400), ("other", 503)}, statuses
    assert statuses[("good", 503)] > 0  # the outage was seen …
    assert statuses[("good", 200)] > 0  # … and service came back
    assert all(r.forwarded_cert == der_b64(good) for r in results if r.status == 200)


def test_a_broken_reload_under_load_keeps_the_old_state(stack: LocalStack, pki: LabPki) -> None:
    good = pki.client("reload-good")
    ca = stack.workdir / "tls" / "server-ca.pem"
    clients = [
        Client(f"good-{i}", good, stack.ports["listen"], ca, stack.workdir) for i in range(3)
    ]
    outcome: list[list[Result]] = []
    traffic = threading.Thread(target=lambda: outcome.append(run_traffic(clients, 4.0)))
    traffic.start()
    time.sleep(1.0)
    (stack.workdir / "trust-bundle.pem").write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
    assert stack.authz is not None
    stack.authz.signal(signal.SIGHUP)
    traffic.join(60)
    results = outcome[0]
    assert results and all(r.status == 200 for r in results), Counter(r.status for r in results)
    assert "reload failed; keeping the previous configuration" in stack.authz.log_text()
