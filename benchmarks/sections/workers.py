"""workers: the direct load against `--workers 1` and `--workers 2`, nothing pinned (h2load needs
a core too)."""

from __future__ import annotations

import time

from benchmarks.harness import Context, Load, grpc_check, grpc_frame, h2load, start_authz
from benchmarks.requests import check_request

NAME = "workers"
ORDER = 20


def run(context: Context) -> list[str]:
    """--workers 1 vs 2, nothing pinned: the load generator needs a core too."""
    workdir, pki, responder, seconds = (
        context.workdir,
        context.pki,
        context.responder,
        context.args.seconds,
    )
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
