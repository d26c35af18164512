"""What every benchmark section shares: where things run (servers on core 0, load generators on
core 1), the load generators (h2load, wrk) and their figures, starting mtls-authz, the floors
and the test responder, and the table of peers side by side."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.demo.pki import LabPki, make_ocsp_signer, pem_bundle
from authz.demo.processes import Process, free_port, tcp_open
from tests.ocsp_responder import OcspResponder

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TWO_CORES = (os.cpu_count() or 1) >= 2
SERVER_CPU = ["taskset", "-c", "0"] if TWO_CORES else []
LOAD_CPU = ["taskset", "-c", "1"] if TWO_CORES else []
START_TIMEOUT = 30


@dataclass(frozen=True)
class Context:
    """What a section is handed: a scratch directory, the lab PKI, the in-process test responder
    (every certificate good) and the run's options."""

    workdir: Path
    pki: LabPki
    responder: OcspResponder
    args: argparse.Namespace


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int
    cpu_us: float | None = None
    """The server's CPU time per request, when measured (`measure_cpu`)."""
    busy: float | None = None
    """The server's CPU time over the run's wall time (1.0: one core always busy)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_cpu(pid: int, run: Callable[[], Load], seconds: float) -> Load:
    """`run` (a load of `seconds`, warm-up included) with the server's CPU time per request."""
    before, started = cpu_seconds(pid), time.monotonic()
    load = run()
    used, wall = cpu_seconds(pid) - before, time.monotonic() - started
    return dataclasses.replace(
        load, cpu_us=used / max(1.0, load.rps * seconds) * 1e6, busy=used / wall
    )


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


def wrk_once(port: int, path: str, header: str) -> str:
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", header,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout


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


def start_floor(
    workdir: Path, http: bool = False, answer: Path | None = None
) -> tuple[Process, int]:
    """A floor server; with `answer`, the same-bytes floor answering that file's bytes."""
    port = free_port()
    argv = [
        *SERVER_CPU,
        sys.executable,
        "-m",
        "benchmarks.http_floor" if http else "benchmarks.floor_server",
        "--listen",
        f"127.0.0.1:{port}",
        *(["--answer", str(answer)] if answer else []),
    ]
    process = Process("floor", argv, workdir / "floor.log").start()
    process.wait_until(lambda: tcp_open(port), START_TIMEOUT, "listening")
    return process, port


def grpc_answer_bytes(port: int, request: external_auth_pb2.CheckRequest) -> bytes:
    """The serialized CheckResponse the server at `port` answers, as it sent it."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        answer: bytes = check(request.SerializeToString(), timeout=10)
        return answer


def http_answer_bytes(port: int, path: str, header: str) -> bytes:
    """The whole HTTP/1.1 response (status line to body) the server at `port` answers to a GET
    of `path` with `header`, as it wrote it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{header}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                raise RuntimeError(f"no whole response from port {port}: {received!r}")
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


def grpc_check(
    port: int, request: external_auth_pb2.CheckRequest
) -> external_auth_pb2.CheckResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)


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


async def concurrent_checks(
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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def table(title: str, runs: dict[str, list[Load]], base: str, ratio: str) -> list[str]:
    """One row per peer: the median round, its spread over rounds, and the ratio to `base`."""
    median = {name: sorted(r, key=lambda x: x.rps)[len(r) // 2] for name, r in runs.items()}
    cpu = all(x.cpu_us is not None for loads in runs.values() for x in loads)
    lines = [
        f"| {title} | req/s | {ratio} (spread) | p50 ms | p99 ms | failed | all rounds, req/s |"
        + (" server CPU per request (core busy) |" if cpu else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |" + (" ---: |" if cpu else ""),
    ]
    for name, loads in runs.items():
        m = median[name]
        ratios = [x.rps / b.rps for x, b in zip(loads, runs[base], strict=True)]
        every = ", ".join(f"{x.rps:.0f}" for x in loads)
        failed = sum(x.failed for x in loads)
        lines.append(
            f"| {name} | {m.rps:.0f} | {m.rps / median[base].rps:.2f} "
            f"({min(ratios):.2f}–{max(ratios):.2f}) | {m.p50_ms:.2f} | {m.p99_ms:.2f} | "
            f"{failed} | {every} |" + (f" {m.cpu_us:.1f} µs ({m.busy:.0%}) |" if cpu else "")
        )
    return lines
