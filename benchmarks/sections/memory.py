"""memory: RSS with N answers cached by Checks of never-seen certificates, and with 100 000 and
1 000 000 answers put in the cache through its own API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from authz.demo.pki import reissue
from benchmarks.harness import REPO, Context, concurrent_checks, grpc_check, rss_mb, start_authz
from benchmarks.requests import check_request

NAME = "memory"
ORDER = 70


def run(context: Context) -> list[str]:
    """RSS with `entries` answers cached by Checks of never-seen certificates (a real process
    over gRPC), and with 100 000 and 1 000 000 answers put in the cache through its own API (a
    process of its own each): the difference is what the per-client structures besides the cache
    cost at their bounds."""
    workdir, pki, responder = context.workdir, context.pki, context.responder
    entries = context.args.memory_entries
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
        asyncio.run(concurrent_checks(port, requests, 64))
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
