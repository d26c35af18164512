"""The hostile corpus against a real mtls-authz over gRPC, mixed with good Checks."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.demo.pki import LabPki, pem_bundle
from authz.demo.processes import Process, free_port, tcp_open
from tests.hostile import cases
from tests.support import envoy_field


async def verdicts(port: int, requests: list[external_auth_pb2.CheckRequest]) -> list[str]:
    options = [("grpc.max_send_message_length", 8 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def one(request: external_auth_pb2.CheckRequest) -> str:
            response = await stub.Check(request, timeout=30)
            if response.HasField("ok_response"):
                return "allowed"
            return str(json.loads(response.denied_response.body)["error"])

        return await asyncio.gather(*(one(r) for r in requests))


def test_hostile_inputs_get_their_reasons_and_good_checks_go_on(tmp_path: Path) -> None:
    pki = LabPki.create()
    corpus = cases(pki)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert, pki.other.cert))
    port = free_port()
    argv = [
        sys.executable, "-m", "authz", "serve", "--listen", f"127.0.0.1:{port}",
        "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN, "--ocsp", "off",
    ]  # fmt: skip
    process = Process("mtls-authz", argv, tmp_path / "authz.log").start()
    try:
        process.wait_until(lambda: tcp_open(port), 30, "listening")
        good = envoy_field(pki.client("between").cert)
        requests, expected = [], []
        for case in corpus:
            for certificate, xfcc, verdict in (
                (case.certificate, case.xfcc, case.expected),
                (good, "", "allowed"),
            ):
                request = external_auth_pb2.CheckRequest()
                request.attributes.source.certificate = certificate
                if xfcc:
                    request.attributes.request.http.headers["x-forwarded-client-cert"] = xfcc
                requests.append(request)
                expected.append(verdict)
        assert asyncio.run(verdicts(port, requests)) == expected
        assert process.poll() is None
        log = process.log_text()
        assert "Traceback" not in log and "internal_error" not in log
    finally:
        process.stop()
