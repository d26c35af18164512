"""`mtls-authz demo`: the whole stack on loopback, a few real requests, and what they show."""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki
from authz.demo.processes import Process, free_port, tcp_open
from authz.demo.stack import HttpResult, LocalStack, default_envoy


@dataclass(frozen=True)
class Scenario:
    title: str
    client: Identity
    expect: Callable[[HttpResult], bool]
    expectation: str


def _forwards_certificate(client: Identity) -> Callable[[HttpResult], bool]:
    der = client.cert.public_bytes(Encoding.DER)

    def check(result: HttpResult) -> bool:
        if result.status != 200:
            return False
        sent = result.json()["headers"].get("x-client-cert", [])
        return bool(sent == [base64.b64encode(der).decode()])

    return check


def _denied(reason: str) -> Callable[[HttpResult], bool]:
    def check(result: HttpResult) -> bool:
        return result.status == 400 and result.headers.get("x-mtls-authz-reason") == reason

    return check


@dataclass(frozen=True)
class Clients:
    good: Identity
    revoked: Identity
    other: Identity


def make_clients(pki: LabPki, ca: OpensslCa, ocsp_url: str) -> Clients:
    """Clients whose AIA points at the responder; the CA database knows good and revoked."""
    clients = Clients(
        good=pki.client("demo-good-client", ocsp_url=ocsp_url),
        revoked=pki.client("demo-revoked-client", ocsp_url=ocsp_url),
        other=pki.client("demo-other-client", pki.other, ocsp_url=ocsp_url),
    )
    ca.add_valid(clients.good)
    ca.add_valid(clients.revoked)
    ca.revoke(clients.revoked)
    return clients


def scenarios(clients: Clients) -> list[Scenario]:
    return [
        Scenario(
            "client from the allowed issuer, good at the OCSP responder",
            clients.good,
            _forwards_certificate(clients.good),
            "200, and the backend receives X-Client-Cert with the client's DER",
        ),
        Scenario(
            "client from the allowed issuer, revoked with openssl ca -revoke",
            clients.revoked,
            _denied("certificate_revoked"),
            "400 with reason certificate_revoked",
        ),
        Scenario(
            "client from a CA under the same root that is not allowed",
            clients.other,
            _denied("issuer_not_allowed"),
            "400 with reason issuer_not_allowed",
        ),
    ]


def _show(stack: LocalStack, scenario: Scenario) -> bool:
    cert, key = stack.client_files(scenario.client)
    command = (
        f"curl -sS --cacert {stack.workdir / 'tls' / 'server-ca.pem'} "
        f"--cert {cert} --key {key} -H 'X-Client-Cert: forged' {stack.url}/hello"
    )
    print(f"\n== {scenario.title}\n$ {command}")
    result = stack.curl(scenario.client, "/hello", headers=["X-Client-Cert: forged"])
    print(f"HTTP {result.status}")
    if result.status == 200:
        forwarded = result.json()["headers"].get("x-client-cert", [""])[0]
        print(f"backend saw X-Client-Cert: {forwarded[:60]}… ({len(forwarded)} chars)")
    else:
        print(f"x-mtls-authz-reason: {result.headers.get('x-mtls-authz-reason')}")
        print(result.body.decode(errors="replace"))
    ok = scenario.expect(result)
    print(f"expected {scenario.expectation}: {'OK' if ok else 'FAILED'}")
    return ok


def _show_check(stack: LocalStack, client: Identity, expected_exit: int) -> bool:
    cert, _ = stack.client_files(client)
    bundle = stack.workdir / "trust-bundle.pem"
    argv = [sys.executable, "-m", "authz", "check", str(cert), "--trust-bundle", str(bundle)]
    print(f"\n$ mtls-authz check {cert} --trust-bundle {bundle}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    print(done.stdout.rstrip() or done.stderr.rstrip())
    ok = done.returncode == expected_exit
    print(f"exit {done.returncode}, expected {expected_exit}: {'OK' if ok else 'FAILED'}")
    return ok


@dataclass(frozen=True)
class DemoOptions:
    once: bool = False
    http: bool = False
    """Envoy asks mtls-authz over its HTTP ext_authz protocol (envoy-http.yaml)."""
    replicas: int = 1
    shared_cache: bool = False
    """A redis-server (from PATH) as the replicas' shared revocation cache."""
    keep: Path | None = None
    """Where to write the PKI, configs and logs, kept after the demo; default: a temporary dir."""


class DemoError(Exception):
    """The demo cannot run here; the message says what to install or change."""


def missing_tools(options: DemoOptions) -> None:
    """Raise DemoError naming what the demo needs and does not find."""
    try:
        default_envoy()
    except FileNotFoundError as e:
        raise DemoError(str(e)) from None
    needed = ["openssl", "curl", *(["redis-server"] if options.shared_cache else [])]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise DemoError(
            f"needs {' and '.join(missing)} on PATH (apt-get install {' '.join(missing)})"
        )
    if options.shared_cache and options.replicas < 2:
        raise DemoError("--shared-cache shares answers between replicas: add --replicas 2")


def run_demo(options: DemoOptions) -> int:
    """Start the stack, run the scenarios; with `once`, exit 0 only if every expectation held."""
    missing_tools(options)
    pki = LabPki.create()
    with contextlib.ExitStack() as stack_of:
        if options.keep is not None:
            options.keep.mkdir(parents=True, exist_ok=True)
            workdir = options.keep
        else:
            workdir = Path(
                stack_of.enter_context(tempfile.TemporaryDirectory(prefix="mtls-authz-demo-"))
            )
        ca = OpensslCa(workdir / "ca", pki.issuing)
        responder = OpensslResponder(ca, workdir / "openssl-ocsp.log")
        clients = make_clients(pki, ca, responder.url)
        stack_of.enter_context(responder)  # it reads the index at start: after the revocation
        extra: list[str] = []
        if options.shared_cache:
            extra += ["--revocation-cache-url", stack_of.enter_context(_redis(workdir))]
        stack = stack_of.enter_context(LocalStack(
            workdir, pki, authz_args=extra, transport="http" if options.http else "grpc",
            replicas=options.replicas,
        ))  # fmt: skip
        print(f"stack up in {workdir}:")
        how = "HTTP (envoy-http.yaml)" if options.http else "gRPC (envoy.yaml)"
        print(f"  Envoy {stack.url} → {options.replicas} mtls-authz over {how} → echo backend")
        print(f"  OCSP: openssl ocsp on {responder.url} (named in each client's AIA)")
        if options.shared_cache:
            print(f"  shared revocation cache: {extra[1]} (redis-server)")
        results = [_show(stack, s) for s in scenarios(clients)]
        results.append(_show_check(stack, clients.good, 0))
        results.append(_show_check(stack, clients.revoked, 1))
        if options.shared_cache:
            results.append(_show_shared(stack, clients.good))
        passed = all(results)
        print(f"\n{sum(results)}/{len(results)} expectations held")
        if options.keep is not None:
            _show_kept(stack, clients)
        if options.once:
            return 0 if passed else 1
        print("\nThe stack keeps running; try the curl commands above. Ctrl-C stops it.")
        _wait_for_interrupt()
    return 0


@contextlib.contextmanager
def _redis(workdir: Path) -> Iterator[str]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    with Process("redis", argv, workdir / "redis.log") as redis:
        redis.wait_until(lambda: tcp_open(port), 30, "listening")
        yield f"redis://127.0.0.1:{port}/0"


def _metric(port: int, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _show_shared(stack: LocalStack, client: Identity) -> bool:
    """The good client again, on the other replicas: they read the first's answer."""
    print("\n== the good client again, answered by the other replicas from the shared cache")
    for _ in range(stack.replicas):
        stack.curl(client, "/again")
    hits = [
        _metric(port, 'mtls_authz_shared_cache_total{result="hit"}') for port in stack.metrics_ports
    ]
    for n, count in enumerate(hits, start=1):
        print(f"replica {n}: {count:.0f} answers read from the shared cache")
    ok = sum(hits) >= 1
    print(f"expected a replica to read another's answer: {'OK' if ok else 'FAILED'}")
    return ok


def _show_kept(stack: LocalStack, clients: Clients) -> None:
    print(f"\nKept in {stack.workdir}: the CA (ca/), Envoy's certificates (tls/), the clients'")
    for name, client in (
        ("good", clients.good),
        ("revoked", clients.revoked),
        ("other", clients.other),
    ):
        cert, key = stack.client_files(client)
        print(f"  {name}: {cert} {key}")
    print("  envoy.yaml, trust-bundle.pem and every process's log (*.log)")


def _wait_for_interrupt() -> None:
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(1):
        pass
