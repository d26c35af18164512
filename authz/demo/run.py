"""`mtls-authz demo`: the whole stack on loopback, a few real requests, and what they show."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki
from authz.demo.stack import HttpResult, LocalStack


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


def run_demo(once: bool = False) -> int:
    """Start the stack, run the scenarios; with `once`, exit 0 only if every expectation held."""
    pki = LabPki.create()
    with tempfile.TemporaryDirectory(prefix="mtls-authz-demo-") as tmp:
        workdir = Path(tmp)
        ca = OpensslCa(workdir / "ca", pki.issuing)
        responder = OpensslResponder(ca, workdir / "openssl-ocsp.log")
        clients = make_clients(pki, ca, responder.url)
        with responder, LocalStack(workdir, pki) as stack:
            print(f"stack up in {workdir}:")
            print(f"  Envoy {stack.url} → mtls-authz → echo backend")
            print(f"  OCSP: openssl ocsp on {responder.url} (named in each client's AIA)")
            results = [_show(stack, s) for s in scenarios(clients)]
            results.append(_show_check(stack, clients.good, 0))
            results.append(_show_check(stack, clients.revoked, 1))
            passed = all(results)
            print(f"\n{sum(results)}/{len(results)} expectations held")
            if once:
                return 0 if passed else 1
            print("\nThe stack keeps running; try the curl commands above. Ctrl-C stops it.")
            _wait_for_interrupt()
    return 0


def _wait_for_interrupt() -> None:
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(1):
        pass
