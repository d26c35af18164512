"""shared: three replicas sharing a redis-server (the shared revocation cache) beside three with
their own caches only; then Redis killed and frozen under one replica."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
import urllib.request
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2

from authz.demo.pki import LabPki, reissue
from benchmarks.harness import Context, concurrent_checks, start_authz, start_responder
from benchmarks.requests import check_request
from tests.support import RedisServer

CERTIFICATES = 1000
DELAY = 0.05

NAME = "shared"
ORDER = 40


async def everywhere(ports: list[int], requests: list[external_auth_pb2.CheckRequest]) -> None:
    """The same Checks through every replica at once."""
    await asyncio.gather(*(concurrent_checks(port, requests, 50) for port in ports))


SEQUENTIAL = 100


def run(context: Context) -> list[str]:
    """Three replicas checking the same never-seen certificates at once, against a responder
    that takes `delay` (its own process), with and without the shared cache (a real
    redis-server); then one replica restarted and asked about them again."""
    workdir, pki, certificates, delay = context.workdir, context.pki, CERTIFICATES, DELAY
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
                asyncio.run(everywhere([p for _, p in replicas], requests))
                fetched = asked() - before
                replicas[0][0].stop()
                replicas[0] = start_authz(
                    workdir, pki, url, "--prefetch-window", "0", *extra, pin=False
                )
                before_restart = asked()
                alone = asyncio.run(concurrent_checks(replicas[0][1], requests[:SEQUENTIAL], 1))
                latencies = sorted(
                    asyncio.run(concurrent_checks(replicas[0][1], requests[SEQUENTIAL:], 50))
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
        rows += ["", *outage(workdir, pki, url, store)]
    finally:
        store.stop()
        responder.stop()
    return rows


def outage(workdir: Path, pki: LabPki, url: str, store: RedisServer, count: int = 50) -> list[str]:
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
                    concurrent_checks(
                        port, [check_request(c.cert, pki.issuing.cert) for c in again], 1
                    )
                )
                assert store.process is not None
                os.kill(store.process.pid, signal.SIGSTOP)
            clients = [reissue(pki.client("outage"), pki.issuing) for _ in range(count)]
            requests = [check_request(c.cert, pki.issuing.cert) for c in clients]
            results[state] = asyncio.run(concurrent_checks(port, requests, 1))
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
