"""The shared revocation cache on a real `redis-server`, with three mtls-authz processes: one
responder request per certificate across replicas, warm restarts, tampered entries never
accepted, and Redis down (killed or frozen) never a reason to refuse."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.core.revocation import CertStatus
from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki, make_ocsp_signer, pem_bundle, reissue
from authz.demo.processes import free_port
from authz.demo.stack import LocalStack
from authz.revocation.loading import issuer_fingerprint, shared_key
from authz.revocation.ocsp import build_query, verify_response
from tests.e2e.test_ocsp_behaviour import check_request
from tests.ocsp_responder import OcspResponder, build_response
from tests.support import RedisServer, Service, envoy_field

START_TIMEOUT = 30
CERTIFICATES = 1000
CHECK_TIMEOUT = 30

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


class Replica(Service):
    """One mtls-authz process using the shared cache."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        pki: LabPki,
        responder: str,
        store: str,
        extra: Sequence[str] = ("--prefetch-window", "0"),
    ) -> None:
        bundle = workdir / f"{name}-bundle.pem"  # its own: a rewrite would reload the others
        bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
        super().__init__(name, workdir, [
            "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN,
            "--ocsp-responder", f"{LabPki.ISSUING_DN}={responder}",
            "--revocation-cache-url", store, *extra,
        ])  # fmt: skip


def verdict(response: external_auth_pb2.CheckResponse) -> str:
    if response.HasField("ok_response"):
        return "allow"
    for option in response.denied_response.headers:
        if option.header.key == "x-mtls-authz-reason":
            return option.header.value
    return "deny"


async def check_all(
    port: int, clients: list[Identity], concurrency: int = 50
) -> list[tuple[str, float]]:
    """Every client's verdict and the Check's latency, `concurrency` at a time."""
    limit = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def one(client: Identity) -> tuple[str, float]:
            async with limit:
                started = time.monotonic()
                response = await stub.Check(
                    check_request(envoy_field(client.cert)), timeout=CHECK_TIMEOUT
                )
                return verdict(response), time.monotonic() - started

        return await asyncio.gather(*(one(c) for c in clients))


def run_checks(replicas: list[Replica], clients: list[Identity]) -> list[list[str]]:
    """The same clients through every replica at once; verdicts per replica."""

    async def everywhere() -> list[list[tuple[str, float]]]:
        return await asyncio.gather(*(check_all(r.port, clients) for r in replicas))

    return [[v for v, _ in results] for results in asyncio.run(everywhere())]


@pytest.fixture
def replicas(
    pki: LabPki, fresh_responder: OcspResponder, redis_server: RedisServer, tmp_path: Path
) -> Iterator[list[Replica]]:
    started = [
        Replica(f"authz-{i}", tmp_path, pki, fresh_responder.url, redis_server.url).start()
        for i in range(3)
    ]
    try:
        yield started
    finally:
        for replica in started:
            replica.process.stop()


def distinct_clients(pki: LabPki, count: int, name: str) -> list[Identity]:
    template = pki.client(name)
    return [reissue(template, pki.issuing) for _ in range(count)]


def stored_key(pki: LabPki, client: Identity, responder: OcspResponder) -> str:
    fingerprint = issuer_fingerprint(pki.issuing.cert).hex()
    serial = format(client.cert.serial_number, "x")
    return shared_key("ocsp", "sha1", fingerprint, serial, responder.url)


def test_three_replicas_ask_the_responder_about_each_certificate_once_and_restart_warm(
    replicas: list[Replica],
    pki: LabPki,
    fresh_responder: OcspResponder,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    clients = distinct_clients(pki, CERTIFICATES, "shared")
    revoked = clients[::100]
    for client in revoked:
        fresh_responder.revoke(client.cert.serial_number)
    expected = ["certificate_revoked" if c in revoked else "allow" for c in clients]

    verdicts = run_checks(replicas, clients)
    assert verdicts == [expected] * 3
    # Not ~3 000: one replica asked, the others waited for its answer or read it.
    assert fresh_responder.requests <= CERTIFICATES * 1.05, fresh_responder.requests
    lock_waits = sum(
        r.metric('mtls_authz_shared_cache_total{result="lock_wait"}') for r in replicas
    )
    hits = sum(r.metric('mtls_authz_shared_cache_total{result="hit"}') for r in replicas)
    assert lock_waits + hits >= CERTIFICATES  # the other replicas' share came from Redis

    # A replica restarted (its own cache empty) answers from the shared cache alone.
    asked = fresh_responder.requests
    replicas[0].process.stop()
    restarted = Replica(
        "authz-restarted", tmp_path, pki, fresh_responder.url, redis_server.url
    ).start()
    try:
        assert run_checks([restarted], clients) == [expected]
        assert fresh_responder.requests == asked
        assert restarted.metric('mtls_authz_shared_cache_total{result="hit"}') == CERTIFICATES
    finally:
        restarted.process.stop()


def test_tampered_entries_are_never_accepted_and_are_replaced(
    replicas: list[Replica],
    pki: LabPki,
    fresh_responder: OcspResponder,
    redis_server: RedisServer,
) -> None:
    assert_tampering_refused(replicas[0], pki, fresh_responder, redis_server.client())


def assert_tampering_refused(
    replica: Replica, pki: LabPki, fresh_responder: OcspResponder, store: Any
) -> None:
    """A writer to the store tries to make revoked certificates good; each is still refused with
    the responder's answer, which then replaces the forged entry. `store`: a redis-py client."""
    victims = distinct_clients(pki, 4, "tamper")
    bystander = pki.client("bystander")
    for victim in victims:
        fresh_responder.revoke(victim.cert.serial_number)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    impostor = make_ocsp_signer(pki.other, "Impostor")  # a signer the issuing CA never authorized
    real = fresh_responder.signer
    issuer = pki.issuing.cert
    forged = {
        # good, signed by another key
        0: build_response((victims[0].cert, issuer), impostor, status=CertStatus.GOOD),
        # good, properly signed, but older than ocsp_cache_max_age (300 s) counted from thisUpdate
        1: build_response(
            (victims[1].cert, issuer),
            real,
            status=CertStatus.GOOD,
            this_update=now - dt.timedelta(seconds=400),
            next_update=now + dt.timedelta(hours=1),
        ),
        # good, properly signed, about another serial
        2: build_response((bystander.cert, issuer), real, status=CertStatus.GOOD),
        # not OCSP at all
        3: b"\x30\x03garbage",
    }
    for index, body in forged.items():
        store.set(stored_key(pki, victims[index], fresh_responder), body, px=600_000)

    verdicts = run_checks([replica], victims)
    assert verdicts == [["certificate_revoked"] * 4]
    assert replica.metric('mtls_authz_shared_cache_total{result="refused"}') == 3
    assert replica.metric('mtls_authz_shared_cache_total{result="stale"}') == 1
    for victim in victims:
        replaced = store.get(stored_key(pki, victim, fresh_responder))
        assert isinstance(replaced, bytes)
        query = build_query(victim.cert, issuer)
        status = verify_response(replaced, query, issuer, dt.datetime.now(dt.UTC))
        assert status.status is CertStatus.REVOKED


def test_redis_down_or_frozen_is_never_a_reason_to_refuse_and_is_used_again_once_back(
    replicas: list[Replica],
    pki: LabPki,
    fresh_responder: OcspResponder,
    redis_server: RedisServer,
) -> None:
    replica = replicas[0]
    good = distinct_clients(pki, 60, "outage")
    revoked = good[::10]
    for client in revoked:
        fresh_responder.revoke(client.cert.serial_number)

    def expected(batch: list[Identity]) -> list[str]:
        return ["certificate_revoked" if c in revoked else "allow" for c in batch]

    async def traffic_while(event: Callable[[], None], batch: list[Identity]) -> list[str]:
        checks = asyncio.create_task(check_all(replica.port, batch, concurrency=5))
        await asyncio.sleep(0.05)
        event()
        return [v for v, _ in await checks]

    # Killed during traffic: every Check still answered, from the responder.
    assert asyncio.run(traffic_while(redis_server.kill, good[:20])) == expected(good[:20])
    assert run_checks([replica], good[20:30]) == [expected(good[20:30])]
    assert replica.metric("mtls_authz_shared_cache_up") == 0
    assert replica.metric('mtls_authz_shared_cache_total{result="error"}') >= 1
    log = replica.process.log_text()
    assert log.count("shared revocation cache unavailable") == 1

    # Back: used again (the breaker probes it again within seconds).
    redis_server.start()
    deadline = time.monotonic() + 15
    batch = iter([good[i : i + 3] for i in range(30, 60, 3)])
    while replica.metric("mtls_authz_shared_cache_up") == 0 and time.monotonic() < deadline:
        some = next(batch)
        assert run_checks([replica], some) == [expected(some)]
        time.sleep(1.0)
    assert replica.metric("mtls_authz_shared_cache_up") == 1
    assert "shared revocation cache reachable again" in replica.process.log_text()
    assert redis_server.client().dbsize() >= 1  # what it fetched since is shared again


def test_a_frozen_redis_costs_bounded_time_then_nothing(
    pki: LabPki, fresh_responder: OcspResponder, redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGSTOP: connections hang. Each operation gives up after revocation_cache_timeout; after
    three the breaker skips Redis; every Check is still answered from the responder."""
    replica = Replica("frozen", tmp_path, pki, fresh_responder.url, redis_server.url).start()
    clients = distinct_clients(pki, 12, "frozen")
    revoked = clients[::4]
    for client in revoked:
        fresh_responder.revoke(client.cert.serial_number)
    expected = ["certificate_revoked" if c in revoked else "allow" for c in clients]
    assert redis_server.process is not None
    try:
        assert run_checks([replica], clients[:2]) == [expected[:2]]  # connected and used
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        results = asyncio.run(check_all(replica.port, clients[2:], concurrency=1))
        assert [v for v, _ in results] == expected[2:]
        assert replica.metric('mtls_authz_shared_cache_total{result="error"}') == 3
        assert replica.metric("mtls_authz_shared_cache_up") == 0
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
        replica.process.stop()


def test_a_server_that_is_not_redis_is_never_a_reason_to_refuse(
    pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """The URL names the OCSP responder's HTTP port: every reply is garbage to a Redis client."""
    not_redis = f"redis://127.0.0.1:{fresh_responder.port}/0"
    replica = Replica("garbage", tmp_path, pki, fresh_responder.url, not_redis).start()
    clients = distinct_clients(pki, 6, "garbage")
    fresh_responder.revoke(clients[0].cert.serial_number)
    try:
        expected = ["certificate_revoked"] + ["allow"] * 5
        assert run_checks([replica], clients) == [expected]
        assert replica.metric('mtls_authz_shared_cache_total{result="error"}') >= 1
        assert replica.metric("mtls_authz_shared_cache_up") == 0
        assert "Traceback" not in replica.process.log_text()
    finally:
        replica.process.stop()


def test_prefetch_refreshes_each_answer_once_across_replicas(
    pki: LabPki, fresh_responder: OcspResponder, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Answers live 6 s (ocsp_cache_max_age, counted from a thisUpdate of now); both replicas
    prefetch. Each refresh of a certificate is made by one replica: the responder never sees the
    same serial twice within a second."""
    fresh_responder.backdate = dt.timedelta(0)
    extra = ["--ocsp-cache-max-age", "6", "--prefetch-window", "60"]
    replicas = [
        Replica(f"prefetch-{i}", tmp_path, pki, fresh_responder.url, redis_server.url, extra)
        for i in range(2)
    ]
    clients = distinct_clients(pki, 20, "prefetch")
    try:
        for replica in replicas:
            replica.start()
        assert run_checks(replicas, clients) == [["allow"] * 20] * 2
        time.sleep(11)  # about two refreshes of each answer
    finally:
        for replica in replicas:
            replica.process.stop()
    by_serial: dict[int, list[float]] = {}
    for serial, when in fresh_responder.answered:
        by_serial.setdefault(serial, []).append(when)
    refreshed = [times for times in by_serial.values() if len(times) > 1]
    assert len(refreshed) == 20, [
        [round(t - times[0], 2) for t in times] for times in by_serial.values()
    ]
    for times in by_serial.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap > 1.0 for gap in gaps), times


def test_with_a_nonce_nothing_is_shared(
    pki: LabPki, fresh_responder: OcspResponder, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A nonce makes an answer good for its own request only: not stored, not read."""
    extra = ["--ocsp-nonce", "--prefetch-window", "0"]
    replica = Replica("nonce", tmp_path, pki, fresh_responder.url, redis_server.url, extra)
    clients = distinct_clients(pki, 5, "nonce")
    try:
        replica.start()
        assert run_checks([replica], clients) == [["allow"] * 5]
        assert fresh_responder.requests == 5
        assert redis_server.client().dbsize() == 0
    finally:
        replica.process.stop()


def test_tls_and_a_password_come_from_the_url_and_the_password_is_never_logged(
    pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """rediss:// with AUTH: the store's certificate checked against the CA the URL names
    (`ssl_ca_certs`), the password from the URL; a wrong password is one more failing store."""
    cert, key = pki.server.write(tmp_path, "redis")  # localhost, 127.0.0.1
    ca = tmp_path / "redis-ca.pem"
    ca.write_bytes(pki.root.cert_pem)
    secret = "s3cret-Pa55"
    server = RedisServer(
        tmp_path, "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-auth-clients", "no", "--requirepass", secret, tls=True,
    ).start()  # fmt: skip
    base = f"rediss://:{{}}@127.0.0.1:{server.port}/0?ssl_ca_certs={ca}"
    good = Replica("tls", tmp_path, pki, fresh_responder.url, base.format(secret))
    wrong = Replica("tls-wrong", tmp_path, pki, fresh_responder.url, base.format("nope"))
    clients = distinct_clients(pki, 4, "tls")
    try:
        good.start()
        wrong.start()
        assert run_checks([good], clients) == [["allow"] * 4]
        assert good.metric('mtls_authz_shared_cache_total{result="written"}') == 4
        assert run_checks([wrong], clients) == [["allow"] * 4]
        assert wrong.metric('mtls_authz_shared_cache_total{result="error"}') >= 1
        assert wrong.metric('mtls_authz_shared_cache_total{result="hit"}') == 0
        for replica in (good, wrong):
            log = replica.process.log_text()
            assert "rediss://:***@127.0.0.1" in log
            assert secret not in log and ":nope@" not in log
    finally:
        good.process.stop()
        wrong.process.stop()
        server.stop()


def test_a_lock_that_is_never_released_costs_a_check_less_than_envoy_s_timeout(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, redis_server: RedisServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A writer to the store (or a replica that died) holds the lock on a client's answer for
    good, and the responder is slow: the waiting replica stops waiting in time to ask the
    responder itself, so the client gets its answer before Envoy's 5 s ext_authz timeout turns
    it into a 503."""
    fresh_responder.delay = 1.7  # under ocsp_timeout (2 s)
    client = pki.client("held-lock")
    lock = "mtls-authz:v1:lock:{" + stored_key(pki, client, fresh_responder) + "}"
    redis_server.client().set(lock, b"x", px=120_000)
    with LocalStack(
        tmp_path / "stack", pki, envoy_binary=envoy, ocsp_override=fresh_responder.url,
        authz_args=["--revocation-cache-url", redis_server.url, "--prefetch-window", "0"],
    ) as stack:  # fmt: skip
        result = stack.curl(client, "/held-lock")
    assert result.status == 200, result.body
    assert fresh_responder.requests == 1


def test_a_newly_issued_client_is_unknown_only_briefly_on_every_replica(
    pki: LabPki, redis_server: RedisServer, tmp_path: Path
) -> None:
    """`openssl ocsp` answers unknown for a certificate added to its index after it started
    (real responders do during issuance): kept ocsp_unknown_cache, here and in the shared cache,
    not ocsp_cache_max_age; the client is let in on every replica once its CA knows it."""
    ca = OpensslCa(tmp_path / "ca", pki.issuing)
    client = pki.client("newly-issued")
    extra = ("--prefetch-window", "0", "--ocsp-unknown-cache", "1", "--log-level", "debug")
    with OpensslResponder(ca, tmp_path / "ocsp.log") as responder:
        first, second = (
            Replica(name, tmp_path, pki, responder.url, redis_server.url, extra).start()
            for name in ("unknown-a", "unknown-b")
        )
        try:
            assert run_checks([first], [client]) == [["certificate_status_unknown"]]
            ca.add_valid(client)
            responder.restart()
            time.sleep(1.5)
            assert run_checks([second], [client]) == [["allow"]]
            assert run_checks([first], [client]) == [["allow"]]
        finally:
            first.process.stop()
            second.process.stop()
    # Where the answers came from, in the decision log: only the responder's has a latency.
    lines = [
        json.loads(line) for line in second.process.log_text().splitlines() if '"decision"' in line
    ]
    assert [(line["revocation_from"], "ocsp_latency" in line) for line in lines] == [
        ("responder", True)
    ]


def test_the_decision_log_says_where_the_answer_came_from(
    pki: LabPki, fresh_responder: OcspResponder, redis_server: RedisServer, tmp_path: Path
) -> None:
    extra = ("--prefetch-window", "0", "--log-level", "debug")
    client = pki.client("answer-origin")
    first, second = (
        Replica(name, tmp_path, pki, fresh_responder.url, redis_server.url, extra).start()
        for name in ("origin-a", "origin-b")
    )
    try:
        run_checks([first], [client])  # the responder
        run_checks([first], [client])  # first's own cache
        run_checks([second], [client])  # the shared cache
    finally:
        first.process.stop()
        second.process.stop()
    origins = []
    for replica in (first, second):
        for line in replica.process.log_text().splitlines():
            if '"decision"' in line:
                entry = json.loads(line)
                origins.append((entry["revocation_from"], "ocsp_latency" in entry))
    assert origins == [("responder", True), ("local_cache", False), ("shared_cache", False)]


def test_a_store_that_does_not_answer_is_said_at_start_and_by_validate_config(
    pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """Not ready-or-not: the store is never a reason to refuse. But the metric and the log say
    it does not answer before any Check, and validate-config warns of it."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    replica = Replica("nowhere", tmp_path, pki, fresh_responder.url, nowhere).start()
    try:
        deadline = time.monotonic() + 10
        while "shared revocation cache unavailable" not in replica.process.log_text():
            assert time.monotonic() < deadline, replica.process.log_text()
            time.sleep(0.1)
        assert replica.metric("mtls_authz_shared_cache_up") == 0
        url = f"http://127.0.0.1:{replica.metrics_port}/readyz"
        with urllib.request.urlopen(url, timeout=5) as ready:
            assert ready.status == 200
        assert '"decision"' not in replica.process.log_text()  # said before any Check
    finally:
        replica.process.stop()
    config = tmp_path / "config.yaml"
    bundle = tmp_path / "nowhere-bundle.pem"
    config.write_text(
        f"trust_bundle: {bundle}\nallowed_issuers: ['{LabPki.ISSUING_DN}']\n"
        f"revocation_cache_url: {nowhere}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "authz", "validate-config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "revocation_cache_url: redis://127.0.0.1:" in done.stderr
    assert "does not answer" in done.stderr and "1 warnings" in done.stdout
