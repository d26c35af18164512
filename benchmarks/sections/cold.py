"""cold: never-seen certificates against a responder in its own process that adds a fixed delay:
one at a time, then many at once (one responder request per certificate)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request

from authz.revocation.fetch import get_url
from authz.revocation.ocsp import build_query
from benchmarks.harness import Context, concurrent_checks, start_authz, start_responder
from benchmarks.requests import check_request

DISTINCT_CONCURRENCY = 50
DELAY = 0.05

NAME = "cold"
ORDER = 30


def run(context: Context) -> list[str]:
    """Never-seen certificates against a responder (its own process) that takes `delay`."""
    workdir, pki, distinct = context.workdir, context.pki, context.args.cold
    concurrency, delay = DISTINCT_CONCURRENCY, DELAY
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
        sequential = asyncio.run(concurrent_checks(authz_port, alone, 1))
        clients = [pki.client(f"cold-{i}") for i in range(distinct)]
        requests = [check_request(c.cert, pki.issuing.cert) for c in clients for _ in range(repeat)]
        latencies = asyncio.run(concurrent_checks(authz_port, requests, concurrency * repeat))
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
