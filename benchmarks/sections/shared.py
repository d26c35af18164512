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
from collections.abc import Callable
from dataclasses import dataclass
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


SEQUENTIAL = 100


async def everywhere(
    ports: list[int], requests: list[external_auth_pb2.CheckRequest]
) -> list[float]:
    """The same Checks through every replica at once: every Check's latency."""
    results = await asyncio.gather(*(concurrent_checks(port, requests, 50) for port in ports))
    return [latency for result in results for latency in result]


@dataclass(frozen=True)
class Figures:
    fetched: int
    """Responder requests for the certificates checked through the three replicas at once."""
    herd: list[float]
    """Those Checks' latencies (seconds), every replica's."""
    alone: list[float]
    """A restarted replica's first Checks one at a time (answers in the store, or not)."""
    after: list[float]
    """The restarted replica's next Checks, 50 at a time."""
    fetched_after: int

    def row(self, name: str, certificates: int) -> str:
        herd, after = sorted(self.herd), sorted(self.after)
        return (
            f"| {name} | {self.fetched} | {self.fetched / certificates:.2f} | "
            f"{_ms(statistics.median(herd))} / {_ms(_p99(herd))} | "
            f"{_ms(statistics.median(self.alone), 2)} | "
            f"{_ms(statistics.median(after))} / {_ms(_p99(after))} | {self.fetched_after} |"
        )


HEADER = [
    "| | responder requests | per certificate | first Checks through 3 replicas at once: p50 / "
    f"p99 | after a restart: first Checks one at a time ({SEQUENTIAL}), p50 | the next ones, "
    "50 at a time: p50 / p99 | responder requests after the restart |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def _ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1000:.{digits}f} ms"


def _p99(ordered: list[float]) -> float:
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def three_replicas(
    workdir: Path, pki: LabPki, url: str, asked: Callable[[], int], *extra: str
) -> Figures:
    """Three replicas check the same never-seen certificates at once; then one is restarted and
    asked about them again, one at a time, then 50 at a time. OCSP timeout at its default: the
    harness's 5 s would leave a replica no time to wait for another's answer (see
    revocation_deadline), and each would ask the responder itself."""
    extra = ("--ocsp-timeout", "2", *extra)
    replicas = [
        start_authz(workdir, pki, url, "--prefetch-window", "0", *extra, pin=False)
        for _ in range(3)
    ]
    clients = [reissue(pki.client("shared-bench"), pki.issuing) for _ in range(CERTIFICATES)]
    requests = [check_request(c.cert, pki.issuing.cert) for c in clients]
    before = asked()
    try:
        herd = asyncio.run(everywhere([p for _, p in replicas], requests))
        fetched = asked() - before
        replicas[0][0].stop()
        replicas[0] = start_authz(workdir, pki, url, "--prefetch-window", "0", *extra, pin=False)
        before_restart = asked()
        alone = asyncio.run(concurrent_checks(replicas[0][1], requests[:SEQUENTIAL], 1))
        after = asyncio.run(concurrent_checks(replicas[0][1], requests[SEQUENTIAL:], 50))
        return Figures(fetched, herd, alone, after, asked() - before_restart)
    finally:
        for process, _ in replicas:
            process.stop()


def responder_counter(port: int) -> Callable[[], int]:
    def asked() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as stats:
            return int(json.load(stats)["requests"])

    return asked


def run(context: Context) -> list[str]:
    """Three replicas checking the same never-seen certificates at once, against a responder
    that takes `delay` (its own process), with and without the shared cache (a real
    redis-server); then one replica restarted and asked about them again."""
    workdir, pki = context.workdir, context.pki
    responder, port = start_responder(workdir, pki, DELAY, "shared")
    url = f"http://127.0.0.1:{port}/ocsp"
    asked = responder_counter(port)
    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    store = RedisServer(redis_dir).start()
    rows = [
        f"Three replicas, {CERTIFICATES} never-seen certificates checked through all three at "
        f"once (50 at a time each); responder answering in {DELAY * 1000:.0f} ms.",
        "",
        *HEADER,
    ]
    try:
        rows.append(three_replicas(workdir, pki, url, asked).row("own caches only", CERTIFICATES))
        shared = three_replicas(workdir, pki, url, asked, "--revocation-cache-url", store.url)
        rows.append(shared.row("shared cache", CERTIFICATES))
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
