"""big-crl: CRLs of 100 000, 300 000 and 1 000 000 entries (`openssl ca -gencrl` over a made-up
index, DER): the time to verify and index one, the index's bytes per entry, the service's RSS
and the verifier's; then the Checks during a refresh under load, beside OCSP mode for as long.

Each size runs twice. First unloaded: the first Check waits for the first load, and the
service's "CRL verified" line gives the figures. Then with `crl_cache_max_age` at 20 s: h2load
(a good client, 10 connections × 10 streams, as `direct`) starts four seconds before the refresh
is due (the first Check past 80 % of the CRL's life starts it) and runs for REFRESH_FACTOR times
the unloaded load's time more: the verifier yields the CPU to the service (nice 10), so under a
load that keeps the service busy the refresh takes about ten times as long. OCSP mode runs as
long under the same load just after. The service and its verifier share core 0, as they would
share a pod's CPU; so does the CRL's web server (see `serve_crl`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from authz.demo.openssl_ocsp import OpensslCa
from authz.demo.pki import LabPki
from authz.demo.processes import Process, free_port, http_ok
from benchmarks.harness import (
    LOAD_CPU,
    SERVER_CPU,
    START_TIMEOUT,
    Context,
    grpc_check,
    grpc_frame,
    rss_mb,
    start_authz,
)
from benchmarks.requests import check_request

NAME = "big-crl"
ORDER = 68
SIZES = (100_000, 300_000, 1_000_000)
MAX_AGE = 20
LEAD = 4.0
"""Seconds of load before the refresh starts, and at least as many after it should end."""
REFRESH_FACTOR = 14


@dataclass(frozen=True)
class Window:
    """The Checks of one h2load run: (start µs since the epoch, duration µs, status) each."""

    rows: list[tuple[int, int, int]]
    seconds: float

    def during(self, start: float, end: float) -> Window:
        """The Checks that were in flight at some moment of [start, end] (seconds since the
        epoch)."""
        lo, hi = start * 1e6, end * 1e6
        return Window([r for r in self.rows if r[0] <= hi and r[0] + r[1] >= lo], end - start)

    @property
    def end(self) -> float:
        return max((r[0] + r[1] for r in self.rows), default=0) / 1e6

    def figures(self) -> str:
        durations = sorted(r[1] for r in self.rows)
        failed = sum(1 for r in self.rows if r[2] != 200)
        if not durations:
            return "– | – | – | – | –"
        p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))] / 1000
        mean = sum(durations) / len(durations) / 1000
        return (
            f"{len(durations)} | {mean:.2f} | {p99:.2f} | **{durations[-1] / 1000:.1f}** | {failed}"
        )


def run(context: Context) -> list[str]:
    workdir, pki, responder = context.workdir / "big-crl", context.pki, context.responder
    workdir.mkdir()
    client = pki.client("bench-big-crl")
    request = check_request(client.cert, pki.issuing.cert)
    body = workdir / "check.grpc"
    body.write_bytes(grpc_frame(request.SerializeToString()))
    sizes = [n for n in SIZES if n <= context.args.crl_entries]
    built, loaded, under_load = [], [], []
    for entries in sizes:
        crl, url, server, made = serve_crl(workdir / f"crl-{entries}", pki, entries)
        try:
            built.append((entries, crl.stat().st_size, made))
            first = load_once(workdir, pki, responder, url, request)
            loaded.append(first)
            seconds = math.ceil(2 * LEAD + REFRESH_FACTOR * first["seconds"])
            crl_run, refreshes = refresh_under_load(
                workdir, pki, responder, url, request, body, seconds
            )
            ocsp_run = ocsp_under_load(workdir, pki, responder, request, body, seconds)
            under_load.append((entries, crl_run, refreshes, ocsp_run))
        finally:
            server.stop()
    return report(built, loaded, under_load)


CRL_SITE_CONF = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {dir}/nginx-tmp;
    proxy_temp_path {dir}/nginx-tmp;
    fastcgi_temp_path {dir}/nginx-tmp;
    uwsgi_temp_path {dir}/nginx-tmp;
    scgi_temp_path {dir}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        root {site};
    }}
}}
"""


def serve_crl(directory: Path, pki: LabPki, entries: int) -> tuple[Path, str, Process, float]:
    """The CRL made and served over HTTP by nginx (sendfile), on the service's core: over
    loopback the kernel's TCP work for a download runs on the sender's core, and a real NIC's
    receive work would run on the service's host — never on the load generator's."""
    ca = OpensslCa(directory / "ca", pki.issuing)
    ca.record_revoked(entries)
    site = directory / "site"
    site.mkdir()
    started = time.monotonic()
    crl = ca.gencrl(site / "issuing.crl", der=True)
    made = time.monotonic() - started
    port = free_port()
    url = f"http://127.0.0.1:{port}/issuing.crl"
    (directory / "nginx-tmp").mkdir()
    conf = directory / "nginx.conf"
    # Started as root, nginx's workers would run as nobody, who cannot enter the bench's
    # private scratch directory.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(CRL_SITE_CONF.format(dir=directory, port=port, site=site, user=user))
    argv = [*SERVER_CPU, "nginx", "-c", str(conf), "-g", "daemon off;"]
    server = Process("crl server", argv, directory / "nginx.log").start()
    server.wait_until(lambda: http_ok(url), START_TIMEOUT, "serving")
    return crl, url, server, made


def crl_args(url: str, max_age: float) -> tuple[str, ...]:
    return ("--revocation", "crl", "--crl-url", f"{LabPki.ISSUING_DN}={url}",
            "--crl-cache-max-age", str(max_age), "--crl-timeout", "60",
            "--prefetch-window", "0", "--log-level", "info")  # fmt: skip


def verified_lines(process: Process) -> list[dict[str, object]]:
    lines = []
    for line in process.log_text().splitlines():
        if line.startswith("{") and ("verifier_pid" in line):
            lines.append(json.loads(line))
    return lines


def load_once(
    workdir: Path, pki: LabPki, responder: object, url: str, request: object
) -> dict[str, float]:
    """The first load, unloaded: the verifier's time and RSS, the index's size, the service's
    RSS before and after."""
    process, port = start_authz(workdir, pki, responder, *crl_args(url, 3600))  # type: ignore[arg-type]
    try:
        before = rss_mb(process.pid)
        started = time.monotonic()
        assert grpc_check(port, request).HasField("ok_response")  # type: ignore[arg-type]
        waited = time.monotonic() - started
        after = rss_mb(process.pid)
        (done,) = [e for e in verified_lines(process) if e["message"] == "CRL verified"]
    finally:
        process.stop()
    entries = float(done["entries"])  # type: ignore[arg-type]
    return {
        "entries": entries,
        "seconds": float(done["seconds"]),  # type: ignore[arg-type]
        "first_check": waited,
        "bytes_per_entry": float(done["index_bytes"]) / entries,  # type: ignore[arg-type]
        "rss_before": before,
        "rss_after": after,
        "verifier_rss": float(done["verifier_max_rss_kib"]) / 1024,  # type: ignore[arg-type]
    }


def h2load_rows(port: int, body: Path, seconds: float, log: Path) -> Window:
    argv = [
        *LOAD_CPU, "h2load", "-D", str(math.ceil(seconds)), "-c", "10", "-m", "10", "-t", "1",
        "-d", str(body), "--log-file", str(log),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        f"http://127.0.0.1:{port}/envoy.service.auth.v3.Authorization/Check",
    ]  # fmt: skip
    subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=True)
    rows = []
    for line in log.read_text().splitlines():
        start, status, duration = line.split("\t")[:3]
        rows.append((int(start), int(duration), int(status)))
    return Window(rows, math.ceil(seconds))


def refresh_under_load(
    workdir: Path,
    pki: LabPki,
    responder: object,
    url: str,
    request: object,
    body: Path,
    seconds: int,
) -> tuple[Window, list[tuple[float, float | None]]]:
    """h2load for `seconds` from LEAD seconds before the refresh is due; every refresh begun in
    the run, its start and end (seconds since the epoch; None: not finished in the run)."""
    process, port = start_authz(workdir, pki, responder, *crl_args(url, MAX_AGE))  # type: ignore[arg-type]
    try:
        assert grpc_check(port, request).HasField("ok_response")  # type: ignore[arg-type]
        time.sleep(max(0.0, 0.8 * MAX_AGE - LEAD))
        window = h2load_rows(port, body, seconds, workdir / "h2load-crl.log")
        lines = verified_lines(process)[2:]  # the first load's two lines
    finally:
        process.stop()
    refreshes: list[tuple[float, float | None]] = []
    for entry in lines:
        at = epoch(str(entry["time"]))
        if entry["message"] == "verifying a CRL off the event loop":
            refreshes.append((at, None))
        elif refreshes and refreshes[-1][1] is None:
            refreshes[-1] = (refreshes[-1][0], at)
    return window, refreshes


def ocsp_under_load(
    workdir: Path, pki: LabPki, responder: object, request: object, body: Path, seconds: float
) -> Window:
    process, port = start_authz(workdir, pki, responder)  # type: ignore[arg-type]
    try:
        assert grpc_check(port, request).HasField("ok_response")  # type: ignore[arg-type]
        return h2load_rows(port, body, seconds, workdir / "h2load-ocsp.log")
    finally:
        process.stop()


def epoch(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def report(
    built: list[tuple[int, int, float]],
    loaded: list[dict[str, float]],
    under_load: list[tuple[int, Window, list[tuple[float, float | None]], Window]],
) -> list[str]:
    lines = [
        "| big CRLs: one load, unloaded | DER MB | `openssl ca -gencrl` s | verify + index s "
        "(in the child) | first Check waited s | index B/entry | service RSS MB before → after "
        "| verifier peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for (entries, size, made), first in zip(built, loaded, strict=True):
        lines.append(
            f"| {entries:,} entries | {size / 1e6:.1f} | {made:.1f} | {first['seconds']:.2f} | "
            f"{first['first_check']:.2f} | {first['bytes_per_entry']:.1f} | "
            f"{first['rss_before']:.0f} → {first['rss_after']:.0f} | {first['verifier_rss']:.0f} |"
        )
    lines += [
        "",
        "| big CRLs: Checks under load (h2load 10 × 10, a good client) | Checks | mean ms | "
        "p99 ms | longest ms | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entries, crl_run, refreshes, ocsp_run in under_load:
        lines.append(
            f"| CRL {entries:,} (max age {MAX_AGE} s), the whole run ({crl_run.seconds:.0f} s, "
            f"{len(refreshes)} refresh{'es' if len(refreshes) != 1 else ''}) | "
            f"{crl_run.figures()} |"
        )
        if refreshes:
            start, end = refreshes[0]
            if end is None:
                lines.append(f"| CRL {entries:,}, its refresh did not end within the run | "
                             f"{crl_run.during(start, crl_run.end).figures()} |")  # fmt: skip
            else:
                lines.append(
                    f"| CRL {entries:,}, during its refresh ({end - start:.1f} s) | "
                    f"{crl_run.during(start, end).figures()} |"
                )
        lines.append(f"| OCSP mode, as long, just after | {ocsp_run.figures()} |")
    return lines
