"""direct: h2load → Authorization/Check over h2c: mtls-authz (warm cache) beside the same-bytes
floor (a generic grpc.aio handler answering mtls-authz's own serialized CheckResponse for the
same request, parsing and serializing nothing) and the trivial floor servicer, alternating
rounds. The headline is mtls-authz / same-bytes floor: everything between them is mtls-authz's
own work."""

from __future__ import annotations

from collections.abc import Callable

from authz.demo.processes import Process
from benchmarks.harness import (
    Context,
    Load,
    grpc_answer_bytes,
    grpc_check,
    grpc_frame,
    h2load,
    measure_cpu,
    start_authz,
    start_floor,
    table,
)
from benchmarks.requests import check_request

NAME = "direct"
ORDER = 10
SAME_BYTES = "same-bytes floor (mtls-authz's answer, as bytes)"
AUTHZ = "mtls-authz, warm cache"


def run(context: Context) -> list[str]:
    """Each server alternately, `rounds` times; the median round of each counts."""
    workdir, pki, responder = context.workdir, context.pki, context.responder
    seconds, rounds = context.args.seconds, context.args.rounds
    client = pki.client("bench-direct")
    request = check_request(client.cert, pki.issuing.cert)
    body = workdir / "check.grpc"
    body.write_bytes(grpc_frame(request.SerializeToString()))
    answer = workdir / "check-answer.bin"
    process, port = start_authz(workdir, pki, responder)
    try:
        grpc_check(port, request)  # warms the OCSP cache
        answer.write_bytes(grpc_answer_bytes(port, request))
    finally:
        process.stop()
    servers: dict[str, Callable[[], tuple[Process, int]]] = {
        "floor (trivial servicer)": lambda: start_floor(workdir),
        SAME_BYTES: lambda: start_floor(workdir, answer=answer),
        AUTHZ: lambda: start_authz(workdir, pki, responder),
    }
    runs: dict[str, list[Load]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, start in servers.items():
            process, port = start()
            try:
                response = grpc_check(port, request)  # also warms the OCSP cache
                assert response.HasField("ok_response"), response
                runs[name].append(
                    measure_cpu(
                        process.pid,
                        lambda p=port: h2load(p, body, seconds, 10, 10, workdir / "h2load.log"),
                        seconds + 2,  # h2load's warm-up
                    )
                )
            finally:
                process.stop()
    return [
        *table(
            f"direct (h2load 10 × 10 streams → Check over h2c; median of {rounds} alternating "
            f"rounds; the answer: {answer.stat().st_size} bytes)",
            runs,
            SAME_BYTES,
            "/ same-bytes floor",
        ),
        "",
        f"**mtls-authz / same-bytes floor over gRPC: {ratio(runs[AUTHZ], runs[SAME_BYTES])}**",
    ]


def ratio(ours: list[Load], floor: list[Load]) -> str:
    """Median of the per-round ratios, with their spread."""
    ratios = sorted(x.rps / b.rps for x, b in zip(ours, floor, strict=True))
    return f"{ratios[len(ratios) // 2]:.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"
