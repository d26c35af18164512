"""blocks: what the emergency block list costs a Check (0, 1 000 and 100 000 entries, from
`benchmarks.check_path`) and how fast a block takes effect: Envoy with the verdict cache and two
workers, two replicas sharing a redis-server, a client every 50 ms with a cached allow in both
workers; `mtls-authz block` (and the file's rename) to the first refused and the last allowed
request, and `unblock` to the first allowed, over many trials."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from authz.demo.stack import default_envoy
from benchmarks.harness import REPO, Context
from tests.blocks_fleet import Fleet, time_to_effect

NAME = "blocks"
ORDER = 65
TRIALS = 50
FILE_TRIALS = 10
LOOKUP = re.compile(
    r"^block lookup, (?P<entries>.+?)\s+(?P<median>[\d.]+) µs \((?P<spread>[^)]+)\)"
)


def _quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{statistics.median(ordered) * 1000:.0f} ms | {p99 * 1000:.0f} ms | "
        f"{max(ordered) * 1000:.0f} ms"
    )


def run(context: Context) -> list[str]:
    lookups = subprocess.run(
        [sys.executable, "-m", "benchmarks.check_path", "--calls", "5000", "--rounds", "5"],
        capture_output=True, text=True, timeout=900, check=True, cwd=REPO,
    ).stdout.splitlines()  # fmt: skip
    rows = [
        "| block list: one Check's lookup, in process (`benchmarks.check_path`, median of 5 "
        "rounds) | µs (spread) |",
        "| --- | ---: |",
    ]
    for line in lookups:
        found = LOOKUP.match(line)
        if found:
            rows.append(f"| {found['entries']} | {found['median']} ({found['spread']}) |")
    rows.append("")
    workdir = context.workdir / "blocks"
    workdir.mkdir()
    fleet = Fleet(workdir, default_envoy(), context.pki).start()
    try:
        measured = _trials(fleet, context, workdir)
    finally:
        fleet.stop()
    rows += [
        f"Time to effect: Envoy (verdict cache, 2 workers) → two replicas sharing a redis-server; "
        f"a client every 50 ms with a cached allow in both workers; {TRIALS} trials by the "
        f"command, {FILE_TRIALS} by the file's rename.",
        "",
        "| from → to | p50 | p99 | max |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {_quantiles(values)} |" for name, values in measured.items()),
    ]
    return rows


def _trials(fleet: Fleet, context: Context, workdir: Path) -> dict[str, list[float]]:
    identity = context.pki.client("bench-blocks")
    pem = workdir / "client.pem"
    pem.write_bytes(identity.cert_pem)
    measured: dict[str, list[float]] = {
        "`block` returns → first refused": [],
        "`block` returns → last allowed": [],
        "`unblock` returns → first allowed": [],
        "file renamed → first refused": [],
        "file renamed → last allowed": [],
    }
    with fleet.client(identity) as client:
        for _ in range(TRIALS):
            fleet.warm(client)
            returned, out = fleet.cli("block", "--cert", str(pem), "--reason", "bench")
            first, last = time_to_effect(client, returned, blocked=True)
            measured["`block` returns → first refused"].append(first)
            measured["`block` returns → last allowed"].append(last)
            returned, _ = fleet.cli("unblock", out.split()[1].rstrip(":"))
            measured["`unblock` returns → first allowed"].append(
                time_to_effect(client, returned, blocked=False)[0]
            )
        fingerprint = identity.cert.fingerprint(hashes.SHA256()).hex()
        for _ in range(FILE_TRIALS):
            fleet.warm(client)
            renamed = fleet.write_file([{"fingerprint": fingerprint, "reason": "bench"}])
            first, last = time_to_effect(client, renamed, blocked=True)
            measured["file renamed → first refused"].append(first)
            measured["file renamed → last allowed"].append(last)
            time_to_effect(client, fleet.write_file([]), blocked=False)
    return measured
