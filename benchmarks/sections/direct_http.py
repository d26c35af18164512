"""direct-http: wrk straight at http_listen, as Envoy's HTTP mode asks, beside the HTTP floor,
alternating rounds."""

from __future__ import annotations

from authz.core.verdict import PEER_CERT_HEADER
from benchmarks.harness import Context, Load, start_authz, start_floor, table, wrk, wrk_once
from tests.support import envoy_field

NAME = "direct-http"
ORDER = 50


def run(context: Context) -> list[str]:
    """wrk straight at http_listen, as Envoy asks (the leaf in x-mtls-authz-peer-cert), against
    the HTTP floor; alternating rounds, the median round of each counts."""
    workdir, pki, responder = context.workdir, context.pki, context.responder
    seconds, rounds = context.args.seconds, context.args.rounds
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
