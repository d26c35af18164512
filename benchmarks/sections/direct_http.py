"""direct-http: wrk straight at http_listen, as Envoy's HTTP mode asks, beside the same-bytes
HTTP floor (mtls-authz's own whole response to the same request, written as bytes on the same
asyncio protocol and httptools parser) and the trivial HTTP floor, alternating rounds."""

from __future__ import annotations

from collections.abc import Callable

from authz.core.verdict import PEER_CERT_HEADER
from authz.demo.processes import Process
from benchmarks.harness import (
    Context,
    Load,
    http_answer_bytes,
    measure_cpu,
    start_authz,
    start_floor,
    table,
    wrk,
    wrk_once,
)
from benchmarks.sections.direct import ratio
from tests.support import envoy_field

NAME = "direct-http"
ORDER = 50
PATH = "/check/bench"
SAME_BYTES = "same-bytes HTTP floor (mtls-authz's answer, as bytes)"
AUTHZ = "mtls-authz http_listen, warm cache"


def run(context: Context) -> list[str]:
    """wrk straight at http_listen, as Envoy asks (the leaf in x-mtls-authz-peer-cert); the
    median round of each server counts."""
    workdir, pki, responder = context.workdir, context.pki, context.responder
    seconds, rounds = context.args.seconds, context.args.rounds
    header = f"{PEER_CERT_HEADER}: {envoy_field(pki.client('bench-direct-http').cert)}"
    answer = workdir / "http-answer.bin"
    process, port = start_authz(workdir, pki, responder, http=True)
    try:
        assert wrk_once(port, PATH, header) == "200"  # warms the OCSP cache
        answer.write_bytes(http_answer_bytes(port, PATH, header))
    finally:
        process.stop()
    servers: dict[str, Callable[[], tuple[Process, int]]] = {
        "HTTP floor (httptools, 200)": lambda: start_floor(workdir, http=True),
        SAME_BYTES: lambda: start_floor(workdir, http=True, answer=answer),
        AUTHZ: lambda: start_authz(workdir, pki, responder, http=True),
    }
    runs: dict[str, list[Load]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, start in servers.items():
            process, port = start()
            try:
                warm = wrk_once(port, PATH, header)
                assert warm == "200", f"{name}: {warm}"
                runs[name].append(
                    measure_cpu(
                        process.pid, lambda p=port: wrk(p, seconds, 10, PATH, (header,)), seconds
                    )
                )
            finally:
                process.stop()
    return [
        *table(
            f"direct (wrk 10 connections → HTTP/1.1 check; median of {rounds} alternating "
            f"rounds; the answer: {answer.stat().st_size} bytes)",
            runs,
            SAME_BYTES,
            "/ same-bytes floor",
        ),
        "",
        f"**mtls-authz / same-bytes floor over HTTP: {ratio(runs[AUTHZ], runs[SAME_BYTES])}**",
    ]
