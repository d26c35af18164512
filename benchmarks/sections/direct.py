"""direct: h2load → Authorization/Check over h2c, mtls-authz (warm cache) beside the floor servicer,
alternating rounds."""

from __future__ import annotations

from benchmarks.harness import (
    Context,
    Load,
    grpc_check,
    grpc_frame,
    h2load,
    start_authz,
    start_floor,
)
from benchmarks.requests import check_request

NAME = "direct"
ORDER = 10


def run(context: Context) -> list[str]:
    """Floor and mtls-authz alternately, `rounds` times each; the median round of each counts."""
    workdir, pki, responder = context.workdir, context.pki, context.responder
    seconds, rounds = context.args.seconds, context.args.rounds
    client = pki.client("bench-direct")
    request = check_request(client.cert, pki.issuing.cert)
    body = workdir / "check.grpc"
    body.write_bytes(grpc_frame(request.SerializeToString()))
    servers = {
        "floor (trivial servicer)": lambda: start_floor(workdir),
        "mtls-authz, warm cache": lambda: start_authz(workdir, pki, responder),
    }
    runs: dict[str, list[Load]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, start in servers.items():
            process, port = start()
            try:
                response = grpc_check(port, request)  # also warms the OCSP cache
                assert response.HasField("ok_response"), response
                runs[name].append(h2load(port, body, seconds, 10, 10, workdir / "h2load.log"))
            finally:
                process.stop()
    results = {
        name: sorted(loads, key=lambda r: r.rps)[len(loads) // 2] for name, loads in runs.items()
    }
    floor, authz = results["floor (trivial servicer)"], results["mtls-authz, warm cache"]
    lines = [
        f"| direct (h2load → Check over h2c; median of {rounds} alternating rounds) | Check/s | p50 ms | p99 ms | failed | all rounds, Check/s |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        every = ", ".join(f"{x.rps:.0f}" for x in runs[name])
        lines.append(
            f"| {name} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.failed} | {every} |"
        )
    lines.append(
        f"| **ratio mtls-authz / floor** | **{authz.rps / floor.rps:.2f}** | "
        f"{authz.p50_ms / floor.p50_ms:.2f}× | {authz.p99_ms / floor.p99_ms:.2f}× | | |"
    )
    return lines
