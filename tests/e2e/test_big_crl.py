"""Large CRLs (`openssl ca -gencrl` over an index of 150 000 revoked serials, 7.4 MB DER): verified
in a child process while Checks are answered from the CRL held, the same rules in the child as
on the loop, and shared between replicas through a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.core.revocation import CertStatus, RevocationError, RevocationFailure
from authz.demo.openssl_ocsp import OpensslCa
from authz.demo.pki import Identity, LabPki, pem_bundle
from authz.demo.processes import Process, free_port, http_ok
from authz.revocation.crl import verify_crl
from authz.revocation.crl_worker import CrlVerifier
from authz.revocation.redis_store import RedisStore
from authz.revocation.shared import SharedAnswers, SharedKey
from tests.e2e.test_ocsp_behaviour import check_request
from tests.support import RedisServer, Service, envoy_field
from tests.unit.test_crl import NOW, build_crl

ENTRIES = 150_000
CHECK_TIMEOUT = 20
RULES = {
    "skew": dt.timedelta(seconds=300),
    "max_age": dt.timedelta(hours=24),
    "allow_sha1": False,
}


class BigCrlSite:
    def __init__(self, url: str, clients: dict[str, Identity], crl: Path, log: Path) -> None:
        self.url, self.clients, self.crl, self.log = url, clients, crl, log

    def downloads(self) -> int:
        return self.log.read_text().count('"GET /issuing.crl HTTP/1.1" 200')


@pytest.fixture(scope="module")
def big_crl(pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigCrlSite]:
    root = tmp_path_factory.mktemp("big-crl")
    ca = OpensslCa(root / "ca", pki.issuing)
    port = free_port()
    url = f"http://127.0.0.1:{port}/issuing.crl"
    clients = {name: pki.client(f"big-crl-{name}", crl_url=url) for name in ("good", "revoked")}
    for client in clients.values():
        ca.add_valid(client)
    ca.revoke(clients["revoked"], "keyCompromise")
    ca.record_revoked(ENTRIES)
    site = root / "site"
    site.mkdir()
    crl = ca.gencrl(site / "issuing.crl", der=True)
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
            "--directory", str(site)]  # fmt: skip
    with Process("crl server", argv, root / "http.log") as server:
        server.wait_until(lambda: http_ok(url), 30, "serving")
        yield BigCrlSite(url, clients, crl, root / "http.log")


def check(port: int, client: Identity) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        response = stub.Check(check_request(envoy_field(client.cert)), timeout=CHECK_TIMEOUT)
    if response.HasField("ok_response"):
        return "allow"
    headers = {o.header.key: o.header.value for o in response.denied_response.headers}
    return headers.get("x-mtls-authz-reason", "deny")


def log_lines(service: Service) -> list[dict[str, object]]:
    lines = []
    for line in service.process.log_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def crl_service(name: str, workdir: Path, pki: LabPki, *extra: str) -> Service:
    bundle = workdir / f"{name}-bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    return Service(name, workdir, [
        "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN,
        "--revocation", "crl", "--prefetch-window", "0", "--crl-timeout", "20", *extra,
    ])  # fmt: skip


def test_checks_are_answered_while_a_refresh_of_a_large_crl_is_being_verified(
    big_crl: BigCrlSite, pki: LabPki, tmp_path: Path
) -> None:
    """The verifier of a refresh is stopped (SIGSTOP) so its work is provably still in
    progress; Checks of a good and a revoked client are answered meanwhile from the CRL held,
    and their decision lines fall between the refresh's "verifying" and "verified" lines."""
    service = crl_service("big", tmp_path, pki, "--crl-cache-max-age", "10", "--log-level", "debug")
    good, revoked = big_crl.clients["good"], big_crl.clients["revoked"]
    with running(service):
        assert check(service.port, good) == "allow"  # the first load: nothing to serve before
        assert check(service.port, revoked) == "certificate_revoked"
        for _ in range(5):  # a verifier that finished before it could be stopped: the next one
            pid = wait_for_refresh(service, good)
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            try:
                if verified(service, pid):
                    continue
                answered = [check(service.port, good), check(service.port, revoked)]
                assert not verified(service, pid)
            finally:
                os.kill(pid, signal.SIGCONT)
            break
        else:
            pytest.fail("no refresh could be caught in progress")
        assert answered == ["allow", "certificate_revoked"]
        service.process.wait_until(lambda: verified(service, pid), 60, "the refresh verified")
    lines = log_lines(service)
    began = next(i for i, e in enumerate(lines) if e.get("verifier_pid") == pid)
    ended = next(i for i, e in enumerate(lines) if e.get("message") == "CRL verified"
                 and e.get("verifier_pid") == pid)  # fmt: skip
    between = [e["reason"] or e["decision"] for e in lines[began:ended] if "decision" in e]
    assert between[-2:] == ["allow", "certificate_revoked"], between
    done = next(e for e in lines if e.get("verifier_pid") == pid and "entries" in e)
    assert done["entries"] == ENTRIES + 1


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    service.start()
    try:
        yield service
    finally:
        service.process.stop()


def wait_for_refresh(service: Service, client: Identity) -> int:
    """The pid of the next verifier started (Checks keep the CRL in use, so it is refreshed
    at 80 % of crl_cache_max_age)."""
    seen = {e.get("verifier_pid") for e in log_lines(service)}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert check(service.port, client) == "allow"
        for entry in log_lines(service):
            if entry.get("message") == "verifying a CRL off the event loop":
                pid = entry["verifier_pid"]
                if pid not in seen:
                    assert isinstance(pid, int)
                    return pid
        time.sleep(0.02)
    raise AssertionError("no refresh started")


def verified(service: Service, pid: int | None) -> bool:
    """Whether the verifier `pid` (None: any) has finished."""
    return any(
        e.get("message") == "CRL verified" and pid in (None, e.get("verifier_pid"))
        for e in log_lines(service)
    )


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_a_replica_reads_a_large_crl_from_the_shared_cache_and_verifies_it_off_the_loop(
    big_crl: BigCrlSite, pki: LabPki, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path).start()
    downloads = big_crl.downloads()
    try:
        store = ("--revocation-cache-url", redis.url, "--log-level", "debug")
        first = crl_service("first", tmp_path, pki, *store)
        with running(first):
            assert check(first.port, big_crl.clients["revoked"]) == "certificate_revoked"
        (key,) = redis.client().keys()  # the CRL, as the CA signed it
        assert redis.client().get(key) == big_crl.crl.read_bytes()
        second = crl_service("second", tmp_path, pki, *store)
        with running(second):
            assert check(second.port, big_crl.clients["revoked"]) == "certificate_revoked"
            assert check(second.port, big_crl.clients["good"]) == "allow"
    finally:
        redis.stop()
    lines = log_lines(second)
    assert [e["revocation_from"] for e in lines if "decision" in e] == [
        "shared_cache", "local_cache",
    ]  # fmt: skip
    assert [e["message"] for e in lines if "verifier_pid" in e] == [
        "verifying a CRL off the event loop", "CRL verified",
    ]  # fmt: skip
    assert big_crl.downloads() == downloads + 1  # the first replica's only


# -- the verifier on its own: the child applies every rule the loop does -----------------------


def verify_both(data: bytes, issuer: Identity) -> tuple[object, object]:
    """What the loop and the child make of `data`: an index or the failure."""

    def inline() -> object:
        try:
            return verify_crl(data, issuer.cert, NOW, **RULES)  # type: ignore[arg-type]
        except RevocationError as error:
            return error.failure

    async def child() -> object:
        verifier = CrlVerifier(inline_max=0)
        try:
            return await verifier.verify(data, issuer.cert, NOW, **RULES)  # type: ignore[arg-type]
        except RevocationError as error:
            return error.failure

    return inline(), asyncio.run(child())


def test_the_child_s_index_is_the_loop_s(pki: LabPki) -> None:
    listed = {7: x509.ReasonFlags.key_compromise, 8: None, (1 << 158) + 5: None}
    mine, theirs = verify_both(build_crl(pki.issuing, listed), pki.issuing)
    for serial in (*listed, 9, 1 << 158):
        a, b = mine.status(serial), theirs.status(serial)  # type: ignore[attr-defined]
        assert (a.status, a.revocation_time, a.revocation_reason, a.valid_until) == (
            b.status, b.revocation_time, b.revocation_reason, b.valid_until,
        )  # fmt: skip
    assert theirs.status(7).status is CertStatus.REVOKED  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda pki: build_crl(pki.root), RevocationFailure.UNAUTHORIZED_SIGNER),
        (lambda pki: b"\x30\x03garbage", RevocationFailure.UNPARSABLE),
        (
            lambda pki: build_crl(
                pki.issuing,
                last=NOW - dt.timedelta(days=3),
                next_=NOW - dt.timedelta(days=2),
            ),
            RevocationFailure.STALE,
        ),
        (lambda pki: forged(pki), RevocationFailure.BAD_SIGNATURE),
        (lambda pki: critical_entry_extension(pki), RevocationFailure.CRITICAL_EXTENSION),
    ],
    ids=["other-issuer", "garbage", "stale", "forged", "critical-entry-extension"],
)
def test_the_child_refuses_what_the_loop_refuses(
    pki: LabPki, make: object, expected: RevocationFailure
) -> None:
    assert verify_both(make(pki), pki.issuing) == (expected, expected)  # type: ignore[operator]


def forged(pki: LabPki) -> bytes:
    """The issuer's name, another key's signature."""
    impostor = Identity(pki.issuing.cert, pki.root.key, ())
    return build_crl(impostor, {5: None})


def critical_entry_extension(pki: LabPki) -> bytes:
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(5)
        .revocation_date(NOW - dt.timedelta(hours=2))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"),
            critical=True,
        )
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.issuing.cert.subject)
        .last_update(NOW - dt.timedelta(minutes=5))
        .next_update(NOW + dt.timedelta(hours=1))
        .add_revoked_certificate(entry)
        .sign(pki.issuing.key, hashes.SHA256())
    )
    return crl.public_bytes(Encoding.DER)


def test_a_verifier_that_dies_or_overruns_is_a_failure_of_that_crl(
    big_crl: BigCrlSite, pki: LabPki
) -> None:
    data = big_crl.crl.read_bytes()

    async def killed() -> RevocationError:
        verifier = CrlVerifier()
        task = asyncio.ensure_future(verifier.verify(data, pki.issuing.cert, NOW, **RULES))  # type: ignore[arg-type]
        while not verifier.pids:  # noqa: ASYNC110 - polling the child's start, bounded by the test
            await asyncio.sleep(0.01)
        os.kill(verifier.pids[0], signal.SIGKILL)
        with pytest.raises(RevocationError) as info:
            await task
        return info.value

    async def overrun() -> RevocationError:
        verifier = CrlVerifier(timeout=0.05)
        with pytest.raises(RevocationError) as info:
            await verifier.verify(data, pki.issuing.cert, NOW, **RULES)  # type: ignore[arg-type]
        assert not verifier.pids  # killed and reaped
        return info.value

    died = asyncio.run(killed())
    assert died.failure is RevocationFailure.UNPARSABLE and "exited (-9)" in died.detail
    late = asyncio.run(overrun())
    assert late.failure is RevocationFailure.TIMEOUT and "more than 0.05 s" in late.detail


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_an_answer_over_the_key_s_size_is_not_stored(tmp_path: Path) -> None:
    """What keeps CRLs over SHARED_CRL_MAX_BYTES out of the shared cache."""
    redis = RedisServer(tmp_path).start()

    async def share(body: bytes) -> None:
        shared = SharedAnswers(RedisStore(redis.url, 1.0), 1.0, 1.0)
        key = SharedKey(f"k{len(body)}", lambda _: True, lambda _: 60.0, max_bytes=10)
        await shared.share(key, body, "answer")
        await shared.close()

    try:
        asyncio.run(share(b"x" * 10))
        asyncio.run(share(b"x" * 11))
        assert sorted(redis.client().keys()) == [b"k10"]
    finally:
        redis.stop()


def test_a_replica_is_ready_only_once_it_holds_the_configured_crl(
    big_crl: BigCrlSite, pki: LabPki, tmp_path: Path
) -> None:
    """crl_urls are loaded before /readyz says 200, so Kubernetes sends no Check that would
    wait for a first load (~8 s for a million entries here, past Envoy's timeout)."""
    configured = f"{LabPki.ISSUING_DN}={big_crl.url}"
    service = crl_service("preload", tmp_path, pki, "--crl-url", configured, "--log-level", "debug")
    ready_url = f"http://127.0.0.1:{service.metrics_port}/readyz"
    with running(service):
        statuses = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses.append(http_status(ready_url))
            if statuses[-1] == 200:
                break
            time.sleep(0.02)
        held = verified(service, None)
        assert check(service.port, big_crl.clients["revoked"]) == "certificate_revoked"
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert held  # verified before ready
    lines = log_lines(service)
    (loaded,) = [e for e in lines if e.get("message") == "CRLs loaded before ready"]
    assert loaded["crls"] == 1 and loaded["failed"] is None
    assert [e["revocation_from"] for e in lines if "decision" in e] == ["local_cache"]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
