"""`make soak`: minutes of mixed traffic through Envoy while the OCSP responder flaps.

Every response is compared with what the policy must answer. Reports requests, wrong decisions
(must be 0), 5xx by cause, crashes, RSS and open file descriptors of mtls-authz after warm-up and
at the end. Writes benchmarks/results/soak-<date>.md.

    make soak SOAK_SECONDS=300
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.core.revocation import CertStatus
from authz.demo.pki import LabPki, make_ocsp_signer
from authz.demo.stack import LocalStack
from tests.ocsp_responder import Mode, OcspResponder
from tests.traffic import Client, run_traffic

RESULTS = Path(__file__).resolve().parent / "results"
# What each kind of client may be answered; anything else is a wrong decision. A 503 is right
# only while the responder is failing and the client's answer is not cached.
ACCEPTABLE = {
    "good": {(200, ""), (503, "revocation_check_failed")},
    "revoked": {(400, "certificate_revoked"), (503, "revocation_check_failed")},
    "unknown": {(400, "certificate_status_unknown"), (503, "revocation_check_failed")},
    "wrong-issuer": {(400, "issuer_not_allowed")},
    "malformed": {(400, "malformed_certificate")},
}


def process_stats(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def malformed_checks(port: int, stop: threading.Event, counts: Counter[tuple[int, str]]) -> None:
    """Garbage straight to mtls-authz (Envoy would refuse it at the handshake)."""
    garbage = ["-----BEGIN%20CERTIFICATE-----%0Agarbage", "%FF%FE", "\x30\x82junk", "A" * 100_000]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        while not stop.is_set():
            request = external_auth_pb2.CheckRequest()
            request.attributes.source.certificate = random.choice(garbage)  # noqa: S311
            try:
                response = stub.Check(request, timeout=10)
                reason = json.loads(response.denied_response.body or "{}").get("error", "")
                counts[(response.denied_response.status.code or 200, reason)] += 1
            except grpc.RpcError:
                counts[(0, "rpc_error")] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--clients", type=int, default=4, help="Connections per kind of client.")
    parser.add_argument(
        "--flap", type=float, default=3.0, help="Seconds between responder changes."
    )
    args = parser.parse_args()

    pki = LabPki.create()
    signer = make_ocsp_signer(pki.issuing)
    identities = {
        "good": pki.client("soak-good"),
        "revoked": pki.client("soak-revoked"),
        "unknown": pki.client("soak-unknown"),
        "wrong-issuer": pki.client("soak-other", pki.other),
    }
    with (
        tempfile.TemporaryDirectory(prefix="mtls-authz-soak-") as tmp,
        OcspResponder(pki.issuing, signer) as responder,
    ):
        responder.revoke(identities["revoked"].cert.serial_number)
        responder.statuses[identities["unknown"].cert.serial_number] = (CertStatus.UNKNOWN, None)
        workdir = Path(tmp)
        authz_args = ["--ocsp-timeout", "1", "--ocsp-cache-max-age", "5", "--log-level", "warning"]
        with LocalStack(workdir, pki, authz_args=authz_args, ocsp_override=responder.url) as stack:
            assert stack.authz is not None
            pid = stack.authz.pid
            ca = workdir / "tls" / "server-ca.pem"
            clients = [
                Client(f"{kind}.{i}", identity, stack.ports["listen"], ca, workdir)
                for kind, identity in identities.items()
                for i in range(args.clients)
            ]
            run_traffic(clients, 5.0)  # warm-up
            rss_start, fds_start = process_stats(pid)
            stop = threading.Event()
            malformed: Counter[tuple[int, str]] = Counter()
            modes = [Mode.NORMAL, Mode.HTTP_500, Mode.NORMAL, Mode.HANG, Mode.NORMAL, Mode.GARBAGE]

            def flap() -> None:
                step = 0
                while not stop.wait(args.flap):
                    step += 1
                    responder.mode = modes[step % len(modes)]

            side = [
                threading.Thread(target=flap),
                threading.Thread(
                    target=malformed_checks, args=(stack.ports["authz"], stop, malformed)
                ),
            ]
            for thread in side:
                thread.start()
            started = time.monotonic()
            results = run_traffic(clients, args.seconds)
            elapsed = time.monotonic() - started
            stop.set()
            for thread in side:
                thread.join(30)
            responder.mode = Mode.NORMAL
            crashed = stack.authz.poll() is not None
            rss_end, fds_end = process_stats(pid) if not crashed else (0.0, 0)

    outcomes: Counter[tuple[str, int, str]] = Counter()
    wrong: Counter[tuple[str, int, str]] = Counter()
    for result in results:
        kind = result.client.split(".")[0]
        key = (kind, result.status, result.reason)
        outcomes[key] += 1
        ok = (result.status, result.reason) in ACCEPTABLE[kind]
        if ok and result.status == 200:
            ok = bool(result.forwarded_cert)  # the backend saw the real certificate
        if not ok:
            wrong[key] += 1
    for (status, reason), count in malformed.items():
        outcomes[("malformed", status, reason)] += count
        if (status, reason) not in ACCEPTABLE["malformed"]:
            wrong[("malformed", status, reason)] += count
    total = sum(outcomes.values())
    five_xx = Counter(
        {f"{k[0]}: {k[2] or 'no reason'}": v for k, v in outcomes.items() if k[1] >= 500}
    )
    lines = [
        f"# mtls-authz soak, {dt.date.today().isoformat()}",
        "",
        f"Command: `make soak` (`python -m benchmarks.soak --seconds {args.seconds} --clients {args.clients}`)",
        f"Traffic: {len(clients)} mTLS connections through Envoy ({args.clients} each: good, revoked, unknown, "
        "wrong issuer) plus a gRPC client sending malformed certificates; the OCSP responder cycles "
        f"normal → HTTP 500 → normal → silent → normal → garbage every {args.flap:.0f} s.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| duration | {elapsed:.0f} s |",
        f"| requests | {total} ({total / elapsed:.0f}/s) |",
        f"| **wrong decisions** | **{sum(wrong.values())}** |",
        f"| **crashes** | **{int(crashed)}** |",
        f"| RSS after warm-up → end | {rss_start:.1f} MB → {rss_end:.1f} MB ({(rss_end / rss_start - 1) * 100 if rss_start else 0:+.1f} %) |",
        f"| open file descriptors after warm-up → end | {fds_start} → {fds_end} |",
        "",
        "| client | status | reason | responses |",
        "| --- | ---: | --- | ---: |",
        *(f"| {k} | {s} | {r or '-'} | {n} |" for (k, s, r), n in sorted(outcomes.items())),
        "",
        "5xx by cause: " + (", ".join(f"{k} {v}" for k, v in sorted(five_xx.items())) or "none"),
    ]
    if wrong:
        lines += ["", "Wrong decisions: " + ", ".join(f"{k}: {v}" for k, v in wrong.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{dt.date.today().isoformat()}.md").write_text(text)
    return 1 if wrong or crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
