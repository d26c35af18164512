"""`make bench`: mtls-authz side by side with its baselines, on this machine, in one run.

- direct: h2load → Authorization/Check over h2c, mtls-authz (warm cache) vs the floor servicer
- direct-http: wrk → http_listen (HTTP/1.1, as Envoy's HTTP mode asks) vs the HTTP floor
- cold: N never-seen certificates at concurrency C, responder with a fixed added latency
- shared: responder requests per certificate across three replicas, with and without the
  shared revocation cache (redis-server), and the first Checks of a restarted replica
- memory: RSS with 100 000 OCSP answers cached by Checks; 100 000 and 1 000 000 through the
  cache's API
- e2e: wrk → client Envoy (originates mTLS) → gateway → direct response, for Envoy alone,
  Envoy + floors and mtls-authz over gRPC and HTTP, the verdict cache, and nginx with ssl_ocsp
  (with and without TLS session resumption); every row once per round, rounds alternating

Servers run on core 0 and load generators on core 1 (taskset) where the machine has two cores.
Results print as a table and go to benchmarks/results/<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.demo import envoy_config
from authz.demo.pki import LabPki, make_ocsp_signer, pem_bundle, reissue
from authz.demo.processes import Process, free_port, http_ok, tcp_open
from authz.revocation.fetch import get_url
from authz.revocation.ocsp import build_query
from authz.transports.http_check import PEER_CERT_HEADER
from benchmarks.requests import check_request
from tests.ocsp_responder import OcspResponder
from tests.support import RedisServer, envoy_field

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TWO_CORES = (os.cpu_count() or 1) >= 2
SERVER_CPU = ["taskset", "-c", "0"] if TWO_CORES else []
LOAD_CPU = ["taskset", "-c", "1"] if TWO_CORES else []
START_TIMEOUT = 30


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} × {model}"


def grpc_frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: compression flag, 4-byte big-endian length, message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(
    port: int, body: Path, seconds: int, clients: int, streams: int, log: Path, pin: bool = True
) -> Load:
    argv = [
        *(LOAD_CPU if pin else []), "h2load", "-D", str(seconds), "--warm-up-time", "2", "-c", str(clients),
        "-m", str(streams), "-t", "1", "-d", str(body), "--log-file", str(log),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", done.stdout).group(1))  # type: ignore[union-attr]
    counts = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", done.stdout
    )
    assert counts, done.stdout
    durations = sorted(
        int(line.split()[2]) for line in log.read_text().splitlines() if line.strip()
    )
    return Load(
        rps,
        durations[len(durations) // 2] / 1000,
        durations[int(len(durations) * 0.99)] / 1000,
        int(counts.group(1)),
        int(counts.group(2)),
    )


def wrk(
    port: int, seconds: int, connections: int, path: str = "/bench", headers: tuple[str, ...] = ()
) -> Load:
    argv = [
        *LOAD_CPU, "wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency",
        "--timeout", "5s", *(f for h in headers for f in ("-H", h)),
        f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(\w+)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (1 if errors else 0)
    return Load(rps, percentile("50"), percentile("99"), total, failed)


def start_authz(
    workdir: Path,
    pki: LabPki,
    responder: OcspResponder | str,
    *extra: str,
    pin: bool = True,
    http: bool = False,
) -> tuple[Process, int]:
    bundle = workdir / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    port = free_port()
    address = f"127.0.0.1:{port}"
    listen = ["--listen", "", "--http-listen", address] if http else ["--listen", address]
    argv = [
        *(SERVER_CPU if pin else []), sys.executable, "-m", "authz", "serve", *listen,
        "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN,
        "--ocsp-responder", f"{LabPki.ISSUING_DN}={responder if isinstance(responder, str) else responder.url}",
        "--log-level", "warning",
        "--ocsp-timeout", "5", *extra,
    ]  # fmt: skip
    process = Process("mtls-authz", argv, workdir / f"authz-{port}.log").start()
    process.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
    return process, port


def start_floor(workdir: Path, http: bool = False) -> tuple[Process, int]:
    port = free_port()
    argv = [
        *SERVER_CPU,
        sys.executable,
        "-m",
        "benchmarks.http_floor" if http else "benchmarks.floor_server",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    process = Process("floor", argv, workdir / "floor.log").start()
    process.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
    return process, port


def grpc_check(
    port: int, request: external_auth_pb2.CheckRequest
) -> external_auth_pb2.CheckResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)


# -- direct ---------------------------------------------------------------------------------------


def bench_direct(
    workdir: Path, pki: LabPki, responder: OcspResponder, seconds: int, rounds: int
) -> list[str]:
    """Floor and mtls-authz alternately, `rounds` times each; the median round of each counts."""
    client = pki.client("bench-direct")
    request = check_request(client.cert, pki.issuing.cert)
    body = workdir / "check.grpc"
    body.write_bytes(grpc_frame(request.SerializeToString()))
    servers = {
        "floor (trivial servicer)": lambda: start_floor(workdir),
        "mtls-authz, warm cache": lambda: start_authz(workdir, pki, responder),
    }
    runs: dict[str, list[Load]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, start in servers.items():
            process, port = start()
            try:
                response = grpc_check(port, request)  # also warms the OCSP cache
                assert response.HasField("ok_response"), response
                runs[name].append(h2load(port, body, seconds, 10, 10, workdir / "h2load.log"))
            finally:
                process.stop()
    results = {
        name: sorted(loads, key=lambda r: r.rps)[len(loads) // 2] for name, loads in runs.items()
    }
    floor, authz = results["floor (trivial servicer)"], results["mtls-authz, warm cache"]
    lines = [
        f"| direct (h2load → Check over h2c; median of {rounds} alternating rounds) | Check/s | p50 ms | p99 ms | failed | all rounds, Check/s |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        every = ", ".join(f"{x.rps:.0f}" for x in runs[name])
        lines.append(
            f"| {name} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.failed} | {every} |"
        )
    lines.append(
        f"| **ratio mtls-authz / floor** | **{authz.rps / floor.rps:.2f}** | "
        f"{authz.p50_ms / floor.p50_ms:.2f}× | {authz.p99_ms / floor.p99_ms:.2f}× | | |"
    )
    return lines


def bench_workers(workdir: Path, pki: LabPki, responder: OcspResponder, seconds: int) -> list[str]:
    """--workers 1 vs 2, nothing pinned: the load generator needs a core too."""
    client = pki.client("bench-workers")
    request = check_request(client.cert, pki.issuing.cert)
    body = workdir / "workers.grpc"
    body.write_bytes(grpc_frame(request.SerializeToString()))
    results: dict[int, Load] = {}
    for count in (1, 2):
        process, port = start_authz(workdir, pki, responder, "--workers", str(count), pin=False)
        try:
            time.sleep(1.0 if count > 1 else 0)  # every worker up
            for _ in range(20):  # new connections reach every worker: warm each one's cache
                assert grpc_check(port, request).HasField("ok_response")
            results[count] = h2load(port, body, seconds, 10, 10, workdir / "h2load.log", pin=False)
        finally:
            process.stop()
    return [
        "| workers (nothing pinned; h2load shares the 2 cores) | Check/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| --workers {n} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
            for n, r in results.items()
        ),
        f"| **2 workers / 1 worker** | **{results[2].rps / results[1].rps:.2f}** | | |",
    ]


# -- cold path ------------------------------------------------------------------------------------


def start_responder(workdir: Path, pki: LabPki, delay: float, name: str) -> tuple[Process, int]:
    """The test responder for the issuing CA in its own process (on the load generator's core),
    answering after `delay`; it counts requests at `/_stats`."""
    signer = make_ocsp_signer(pki.issuing)
    (workdir / "issuing.pem").write_bytes(pki.issuing.cert_pem)
    signer_cert, signer_key = signer.write(workdir, f"{name}-signer")
    port = free_port()
    argv = [
        *LOAD_CPU, sys.executable, "-m", "tests.ocsp_responder", "--port", str(port),
        "--issuer", str(workdir / "issuing.pem"), "--signer", str(signer_cert),
        "--signer-key", str(signer_key), "--delay", str(delay),
    ]  # fmt: skip
    responder = Process("responder", argv, workdir / f"{name}-responder.log").start()
    responder.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
    return responder, port


def bench_cold(
    workdir: Path, pki: LabPki, distinct: int, concurrency: int, delay: float
) -> list[str]:
    """Never-seen certificates against a responder (its own process) that takes `delay`."""
    responder, port = start_responder(workdir, pki, delay, "cold")
    url = f"http://127.0.0.1:{port}/ocsp"
    repeat = 4  # each certificate asked for this many times at once: one request must serve all
    process, authz_port = start_authz(
        workdir, pki, url, "--ocsp-responder-concurrency", str(concurrency)
    )
    try:
        # The responder's own time, asked directly (one at a time, distinct certificates).
        direct = []
        for i in range(50):
            der = build_query(pki.client(f"cold-direct-{i}").cert, pki.issuing.cert).der
            started = time.perf_counter()
            with urllib.request.urlopen(get_url(url, der) or url, timeout=10) as answer:
                answer.read()
            direct.append(time.perf_counter() - started)
        # One at a time: what a cold Check adds over the responder when nothing queues.
        alone = [
            check_request(pki.client(f"cold-seq-{i}").cert, pki.issuing.cert) for i in range(50)
        ]
        sequential = asyncio.run(_concurrent_checks(authz_port, alone, 1))
        clients = [pki.client(f"cold-{i}") for i in range(distinct)]
        requests = [check_request(c.cert, pki.issuing.cert) for c in clients for _ in range(repeat)]
        latencies = asyncio.run(_concurrent_checks(authz_port, requests, concurrency * repeat))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as stats:
            sent = json.load(stats)["requests"] - len(alone) - len(direct)
    finally:
        process.stop()
        responder.stop()
    seq_median = statistics.median(sequential) * 1000
    own = statistics.median(direct) * 1000
    median = statistics.median(latencies) * 1000
    return [
        "| cold path (responder in its own process) | value |",
        "| --- | ---: |",
        f"| responder's configured delay | {delay * 1000:.0f} ms |",
        f"| responder's own time, asked directly, p50 | {own:.1f} ms |",
        f"| one at a time: Check latency p50 (50 certificates) | {seq_median:.1f} ms |",
        f"| **one at a time: added over the responder's own time, p50** | **{seq_median - own:.1f} ms** |",
        f"| concurrent: distinct certificates, each checked {repeat}× at once | {distinct} |",
        f"| concurrent: Checks in flight | {concurrency * repeat} ({concurrency} distinct) |",
        f"| concurrent: OCSP requests at the responder | **{sent}** (must be {distinct}) |",
        f"| concurrent: Check latency p50 | {median:.1f} ms |",
        f"| concurrent: added over the responder's own time, p50 | {median - own:.1f} ms |",
    ]


async def _concurrent_checks(
    port: int, requests: list[external_auth_pb2.CheckRequest], concurrency: int
) -> list[float]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def one(request: external_auth_pb2.CheckRequest) -> None:
            async with gate:
                started = time.perf_counter()
                response = await stub.Check(request, timeout=30)
                latencies.append(time.perf_counter() - started)
                assert response.HasField("ok_response"), response

        await asyncio.gather(*(one(r) for r in requests))
    return latencies


# -- shared revocation cache ------------------------------------------------------------------


async def _everywhere(ports: list[int], requests: list[external_auth_pb2.CheckRequest]) -> None:
    """The same Checks through every replica at once."""
    await asyncio.gather(*(_concurrent_checks(port, requests, 50) for port in ports))


SEQUENTIAL = 100


def bench_shared(workdir: Path, pki: LabPki, certificates: int, delay: float) -> list[str]:
    """Three replicas checking the same never-seen certificates at once, against a responder
    that takes `delay` (its own process), with and without the shared cache (a real
    redis-server); then one replica restarted and asked about them again."""
    responder, port = start_responder(workdir, pki, delay, "shared")
    url = f"http://127.0.0.1:{port}/ocsp"

    def asked() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as stats:
            return int(json.load(stats)["requests"])

    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    store = RedisServer(redis_dir).start()
    rows = [
        f"Three replicas, {certificates} never-seen certificates checked through all three at "
        f"once (50 at a time each); responder answering in {delay * 1000:.0f} ms.",
        "",
        f"| | responder requests | per certificate | after a restart: first Checks one at a "
        f"time ({SEQUENTIAL}), p50 | the next {certificates - SEQUENTIAL}, 50 at a time: p50 / p99 "
        "| responder requests after the restart |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    try:
        for name, extra in (
            ("own caches only", ()),
            ("shared cache", ("--revocation-cache-url", store.url)),
        ):
            if extra:
                store.client().flushall()
            replicas = [
                start_authz(workdir, pki, url, "--prefetch-window", "0", *extra, pin=False)
                for _ in range(3)
            ]
            clients = [
                reissue(pki.client("shared-bench"), pki.issuing) for _ in range(certificates)
            ]
            requests = [check_request(c.cert, pki.issuing.cert) for c in clients]
            before = asked()

            try:
                asyncio.run(_everywhere([p for _, p in replicas], requests))
                fetched = asked() - before
                replicas[0][0].stop()
                replicas[0] = start_authz(
                    workdir, pki, url, "--prefetch-window", "0", *extra, pin=False
                )
                before_restart = asked()
                alone = asyncio.run(_concurrent_checks(replicas[0][1], requests[:SEQUENTIAL], 1))
                latencies = sorted(
                    asyncio.run(_concurrent_checks(replicas[0][1], requests[SEQUENTIAL:], 50))
                )
                after_restart = asked() - before_restart
            finally:
                for process, _ in replicas:
                    process.stop()
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
            rows.append(
                f"| {name} | {fetched} | {fetched / certificates:.2f} | "
                f"{statistics.median(alone) * 1000:.2f} ms | {p50:.1f} ms / {p99:.1f} ms "
                f"| {after_restart} |"
            )
        rows += ["", *bench_shared_outage(workdir, pki, url, store)]
    finally:
        store.stop()
        responder.stop()
    return rows


def bench_shared_outage(
    workdir: Path, pki: LabPki, url: str, store: RedisServer, count: int = 50
) -> list[str]:
    """What Redis failing costs a Check: never-seen certificates one at a time while Redis is
    up, killed (connection refused), and frozen (SIGSTOP: connections hang until
    revocation_cache_timeout)."""
    process, port = start_authz(
        workdir, pki, url, "--prefetch-window", "0", "--revocation-cache-url", store.url, pin=False
    )
    rows = [
        f"Redis failing: {count} never-seen certificates one at a time through one replica "
        "(revocation_cache_timeout 0.25 s; the breaker opens after 3 failures for 5 s).",
        "",
        "| Redis | Check p50 | Check max | max added over Redis up |",
        "| --- | ---: | ---: | ---: |",
    ]
    try:
        results: dict[str, list[float]] = {}
        for state in ("up", "killed", "frozen"):
            if state == "killed":
                store.kill()
            if state == "frozen":
                store.start()
                time.sleep(6)  # the breaker half-opens; a few Checks find Redis back
                again = [reissue(pki.client("outage"), pki.issuing) for _ in range(3)]
                asyncio.run(
                    _concurrent_checks(
                        port, [check_request(c.cert, pki.issuing.cert) for c in again], 1
                    )
                )
                assert store.process is not None
                os.kill(store.process.pid, signal.SIGSTOP)
            clients = [reissue(pki.client("outage"), pki.issuing) for _ in range(count)]
            requests = [check_request(c.cert, pki.issuing.cert) for c in clients]
            results[state] = asyncio.run(_concurrent_checks(port, requests, 1))
        base = statistics.median(results["up"])
        for state, latencies in results.items():
            rows.append(
                f"| {state} | {statistics.median(latencies) * 1000:.1f} ms | "
                f"{max(latencies) * 1000:.1f} ms | {(max(latencies) - base) * 1000:.0f} ms |"
            )
    finally:
        if store.process is not None and store.process.poll() is None:
            os.kill(store.process.pid, signal.SIGCONT)
        process.stop()
    return rows


# -- memory ---------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bench_memory(workdir: Path, pki: LabPki, responder: OcspResponder, entries: int) -> list[str]:
    """RSS with `entries` answers cached by Checks of never-seen certificates (a real process
    over gRPC), and with 100 000 and 1 000 000 answers put in the cache through its own API (a
    process of its own each): the difference is what the per-client structures besides the cache
    cost at their bounds."""
    process, port = start_authz(workdir, pki, responder, "--ocsp-cache-size", str(entries))
    try:
        first = pki.client("mem-0")
        grpc_check(port, check_request(first.cert, pki.issuing.cert))
        baseline = rss_mb(process.pid)
        started = time.monotonic()
        template = pki.client("mem-template")
        requests = [
            check_request(reissue(template, pki.issuing).cert, pki.issuing.cert)
            for i in range(entries)
        ]
        asyncio.run(_concurrent_checks(port, requests, 64))
        filled = rss_mb(process.pid)
        elapsed = time.monotonic() - started
    finally:
        process.stop()
    per_check = (filled - baseline) * 1024 * 1024 / entries
    fills = {n: api_fill(n) for n in (entries, 1_000_000)}
    rows = [
        "| memory | value |",
        "| --- | ---: |",
        f"| RSS after start and one Check | {baseline:.1f} MB |",
        f"| RSS with {entries} answers cached by Checks | **{filled:.1f} MB** |",
        f"| per answer, by Checks (everything a new client leaves) | {per_check:.0f} bytes |",
        f"| time to fill by Checks (never-seen certificates) | {elapsed:.0f} s |",
    ]
    for n, (base, full) in fills.items():
        rows.append(
            f"| cache alone, {n} answers (its API): RSS {base:.1f} → {full:.1f} MB | "
            f"**{(full - base) * 1024 * 1024 / n:.0f} bytes** per answer |"
        )
    cache_only = (fills[entries][1] - fills[entries][0]) * 1024 * 1024 / entries
    rows += [
        f"| the rest, at their bounds (by Checks − cache alone, {entries}) | "
        f"{(per_check - cache_only) * entries / 1024 / 1024:.1f} MB |",
        "",
        "Bounded per-client structures besides the OCSP cache (`ocsp_cache_size`): verified "
        "certificates 2048, allow verdicts 4096, rendered responses 4096, encoded certificates "
        "4096, identity headers 4096, responder URLs 4096, cache keys 4096, decoded answers 4096, "
        "parsed XFCC headers 4096, issuer fingerprints 1024.",
    ]
    return rows


def api_fill(entries: int) -> tuple[float, float]:
    """RSS (MB) before and after `benchmarks.memory_fill` puts `entries` answers in the cache."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_fill", str(entries)],
        capture_output=True, text=True, timeout=900, check=True, cwd=REPO,
    )  # fmt: skip
    figures = json.loads(done.stdout)
    return figures["baseline"] / 1024 / 1024, figures["filled"] / 1024 / 1024


# -- end to end -----------------------------------------------------------------------------------


def bench_direct_http(
    workdir: Path, pki: LabPki, responder: OcspResponder, seconds: int, rounds: int
) -> list[str]:
    """wrk straight at http_listen, as Envoy asks (the leaf in x-mtls-authz-peer-cert), against
    the HTTP floor; alternating rounds, the median round of each counts."""
    header = f"{PEER_CERT_HEADER}: {envoy_field(pki.client('bench-direct-http').cert)}"
    servers = {
        "HTTP floor (httptools, 200)": lambda: start_floor(workdir, http=True),
        "mtls-authz http_listen, warm cache": lambda: start_authz(
            workdir, pki, responder, http=True
        ),
    }
    runs: dict[str, list[Load]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, start in servers.items():
            process, port = start()
            try:
                warm = wrk_once(port, "/check/bench", header)
                assert warm == "200", f"{name}: {warm}"
                runs[name].append(wrk(port, seconds, 10, "/check/bench", (header,)))
            finally:
                process.stop()
    return table(
        f"direct (wrk → HTTP/1.1 check; median of {rounds} alternating rounds)",
        runs,
        "HTTP floor (httptools, 200)",
        "/ floor",
    )


def wrk_once(port: int, path: str, header: str) -> str:
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", header,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout


def table(title: str, runs: dict[str, list[Load]], base: str, ratio: str) -> list[str]:
    """One row per peer: the median round, its spread over rounds, and the ratio to `base`."""
    median = {name: sorted(r, key=lambda x: x.rps)[len(r) // 2] for name, r in runs.items()}
    lines = [
        f"| {title} | req/s | {ratio} (spread) | p50 ms | p99 ms | failed | all rounds, req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, loads in runs.items():
        m = median[name]
        ratios = [x.rps / b.rps for x, b in zip(loads, runs[base], strict=True)]
        every = ", ".join(f"{x.rps:.0f}" for x in loads)
        failed = sum(x.failed for x in loads)
        lines.append(
            f"| {name} | {m.rps:.0f} | {m.rps / median[base].rps:.2f} "
            f"({min(ratios):.2f}–{max(ratios):.2f}) | {m.p50_ms:.2f} | {m.p99_ms:.2f} | "
            f"{failed} | {every} |"
        )
    return lines


def bench_e2e(
    workdir: Path, pki: LabPki, responder: OcspResponder, seconds: int, rounds: int
) -> list[str]:
    """Every gateway once per round, rounds alternating; each row: the median round, and the
    ratio to Envoy alone within each round (min–max)."""
    client = pki.client("bench-e2e", ocsp_url=responder.url)
    tls = workdir / "tls"
    server_cert, server_key = pki.server.write(tls, "server")
    client_cert, client_key = client.write(tls, "client")
    (tls / "client-ca.pem").write_bytes(pem_bundle(pki.root.cert))
    (tls / "server-ca.pem").write_bytes(pem_bundle(pki.root.cert))
    files = {
        envoy_config.SERVER_CERT: server_cert,
        envoy_config.SERVER_KEY: server_key,
        envoy_config.CLIENT_CA: tls / "client-ca.pem",
    }

    def envoy(authz: Callable[[], tuple[Process, int]] | None, **kind: bool) -> Gateway:
        return lambda port: _gateway_envoy(workdir, port, files, authz() if authz else None, **kind)

    gateways: dict[str, Gateway] = {
        ALONE: envoy(None),
        "Envoy + gRPC floor servicer": envoy(lambda: start_floor(workdir)),
        "Envoy + mtls-authz (gRPC)": envoy(lambda: start_authz(workdir, pki, responder)),
        "Envoy + HTTP floor": envoy(lambda: start_floor(workdir, http=True), http=True),
        "Envoy + mtls-authz (HTTP)": envoy(
            lambda: start_authz(workdir, pki, responder, http=True), http=True
        ),
        "Envoy + mtls-authz (gRPC) + verdict cache": envoy(
            lambda: start_authz(workdir, pki, responder), cached=True
        ),
        NGINX: lambda port: _gateway_nginx(workdir, port, tls, resumption=True),
        NGINX_NO_RESUMPTION: lambda port: _gateway_nginx(workdir, port, tls, resumption=False),
    }
    runs: dict[str, list[Load]] = {name: [] for name in gateways}
    ocsp_requests: dict[str, int] = dict.fromkeys(gateways, 0)
    for _ in range(rounds):
        for name, start in gateways.items():
            gateway_port = free_port()
            processes = start(gateway_port)
            try:
                client_port, client_envoy = _client_envoy(
                    workdir, gateway_port, client_cert, client_key, tls / "server-ca.pem"
                )
                processes.append(client_envoy)
                # One request first, as any client's first request: it also leaves a TLS
                # session the load's connections resume.
                warm = wrk_once(client_port, "/bench", "x-bench: warm")
                assert warm == "200", f"{name}: {warm}"
                before = responder.requests
                runs[name].append(wrk(client_port, seconds, connections=32))
                ocsp_requests[name] += responder.requests - before
            finally:
                for process in reversed(processes):
                    process.stop()
    lines = table(
        f"end to end (wrk → client Envoy → gateway; median of {rounds} rounds)",
        runs,
        ALONE,
        "/ Envoy alone",
    )
    lines.append("")
    lines.append("| gateway | OCSP requests during the load | worst-case revocation staleness |")
    lines.append("| --- | ---: | --- |")
    lines += [f"| {name} | {ocsp_requests[name]} | {STALENESS[name]} |" for name in gateways]
    return lines


Gateway = Callable[[int], list[Process]]
ALONE = "Envoy alone (no ext_authz)"
NGINX = "nginx, ssl_ocsp leaf"
NGINX_NO_RESUMPTION = "nginx, ssl_ocsp leaf, TLS session resumption off"

# How long a revocation can go unseen with each gateway as configured here (defaults).
STALENESS = {
    ALONE: "never checked",
    "Envoy + gRPC floor servicer": "never checked",
    "Envoy + mtls-authz (gRPC)": "ocsp_cache_max_age = 300 s",
    "Envoy + HTTP floor": "never checked",
    "Envoy + mtls-authz (HTTP)": "ocsp_cache_max_age = 300 s",
    "Envoy + mtls-authz (gRPC) + verdict cache": "ocsp_cache_max_age + verdict_cache_ttl = 330 s",
    NGINX: "until the response's nextUpdate (1 h here)",
    NGINX_NO_RESUMPTION: "until the response's nextUpdate (1 h here)",
}


def _gateway_envoy(
    workdir: Path,
    port: int,
    files: dict[str, Path],
    authz: tuple[Process, int] | None,
    cached: bool = False,
    http: bool = False,
) -> list[Process]:
    admin, ops = free_port(), free_port()
    shipped = "envoy-cached.yaml" if cached else "envoy-http.yaml" if http else "envoy.yaml"
    config = envoy_config.render(
        REPO / "envoy" / shipped,
        listener_ports={"mtls_gateway": port, "ops": ops},
        admin_port=admin,
        cluster_ports={"mtls_authz": authz[1] if authz else free_port(), "app": free_port()},
        files=files,
    )
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
            # The route names its policy: the verdict cache serves only such routes.
            "metadata": {"filter_metadata": {"envoy.filters.http.lua": {"policy": "default"}}},
        }
    ]
    if authz is None:
        hcm["http_filters"] = [
            f
            for f in hcm["http_filters"]
            if f["name"] not in ("envoy.filters.http.ext_authz", "envoy.filters.http.lua")
        ]
    path = envoy_config.write(config, workdir / f"gateway-{port}.yaml")
    envoy = _start_envoy("gateway envoy", path, admin, SERVER_CPU)
    return [authz[0], envoy] if authz else [envoy]


def _start_envoy(name: str, config: Path, admin: int, cpu: list[str]) -> Process:
    argv = [*cpu, _envoy(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "error"]  # fmt: skip
    envoy = Process(name, argv, config.with_suffix(".log")).start()
    envoy.wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), START_TIMEOUT, "ready")
    return envoy


def _gateway_nginx(workdir: Path, port: int, tls: Path, resumption: bool) -> list[Process]:
    """nginx as its users run it with ssl_ocsp: with TLS session resumption (the default), or
    with it off. With ssl_ocsp on, nginx 1.22 closes a keep-alive connection after its first
    request when the client resumed the TLS session, so every request pays a handshake."""
    conf = workdir / f"nginx-{port}.conf"
    off = "" if resumption else "ssl_session_tickets off;\n        ssl_session_cache off;"
    conf.write_text(NGINX_CONF.format(port=port, tls=tls, dir=workdir, resumption=off))
    nginx = Process(
        "nginx",
        [*SERVER_CPU, "nginx", "-c", str(conf), "-g", "daemon off;"],
        workdir / f"nginx-{port}.log",
    ).start()
    nginx.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
    return [nginx]


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp;
    proxy_temp_path {dir}/nginx-tmp;
    fastcgi_temp_path {dir}/nginx-tmp;
    uwsgi_temp_path {dir}/nginx-tmp;
    scgi_temp_path {dir}/nginx-tmp;
    ssl_ocsp_cache shared:OCSP:10m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tls}/server.pem;
        ssl_certificate_key {tls}/server.key;
        ssl_client_certificate {tls}/client-ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_ocsp leaf;
        {resumption}
        keepalive_requests 100000;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def _envoy() -> str:
    return str(Path(sys.executable).parent / "envoy")


def _client_envoy(
    workdir: Path, gateway_port: int, cert: Path, key: Path, server_ca: Path
) -> tuple[int, Process]:
    port, admin = free_port(), free_port()
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "plain", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "client",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "gateway"}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }}]}],
            }],
            "clusters": [{
                "name": "gateway", "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": "gateway", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": gateway_port}}}}]}]},
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": "localhost",
                    "common_tls_context": {
                        "tls_certificates": [{"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}],
                        "validation_context": {"trusted_ca": {"filename": str(server_ca)}},
                    },
                }},
            }],
        },
    }  # fmt: skip
    path = workdir / f"client-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return port, _start_envoy("client envoy", path, admin, LOAD_CPU)


# -- the run --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="Measured seconds per load run.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds (direct, e2e).")
    parser.add_argument("--cold", type=int, default=500, help="Distinct certificates, cold path.")
    parser.add_argument("--memory-entries", type=int, default=100_000)
    parser.add_argument(
        "--only",
        choices=("direct", "direct-http", "workers", "cold", "shared", "memory", "e2e"),
        action="append",
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; no results file.")
    args = parser.parse_args()
    only = set(args.only or ("direct", "direct-http", "workers", "cold", "shared", "memory", "e2e"))
    pki = LabPki.create()
    sections: list[list[str]] = []
    with (
        tempfile.TemporaryDirectory(prefix="mtls-authz-bench-") as tmp,
        OcspResponder(pki.issuing, make_ocsp_signer(pki.issuing)) as responder,
    ):
        workdir = Path(tmp)
        if "direct" in only:
            sections.append(bench_direct(workdir, pki, responder, args.seconds, args.rounds))
        if "workers" in only:
            sections.append(bench_workers(workdir, pki, responder, args.seconds))
        if "cold" in only:
            sections.append(bench_cold(workdir, pki, args.cold, 50, 0.05))
        if "shared" in only:
            sections.append(bench_shared(workdir, pki, 1000, 0.05))
        if "direct-http" in only:
            sections.append(bench_direct_http(workdir, pki, responder, args.seconds, args.rounds))
        if "e2e" in only:
            sections.append(bench_e2e(workdir, pki, responder, args.seconds, args.rounds))
        if "memory" in only:
            sections.append(bench_memory(workdir, pki, responder, args.memory_entries))
    header = [
        f"# mtls-authz benchmarks, {dt.date.today().isoformat()}",
        "",
        f"Machine: {machine()}. Servers pinned to core 0, load generators to core 1"
        if TWO_CORES
        else f"Machine: {machine()} (one core: nothing pinned)",
        f"Command: `make bench` (`python -m benchmarks.run --seconds {args.seconds}`)",
        "",
    ]
    text = "\n".join(header + ["\n".join(s) + "\n" for s in sections])
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{dt.date.today().isoformat()}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
