"""mtls-authz as a process, called over gRPC, against the project's (controllable) test responder."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.demo.pki import LabPki, pem_bundle
from authz.demo.processes import Process, free_port, tcp_open
from tests.ocsp_responder import Mode, OcspResponder
from tests.support import envoy_field

OCSP_TIMEOUT = 1.0


@pytest.fixture
def authz(
    pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> Iterator[tuple[Process, int]]:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    port = free_port()
    argv = [
        sys.executable, "-m", "authz", "serve", "--listen", f"127.0.0.1:{port}",
        "--trust-bundle", str(bundle), "--allowed-issuer", LabPki.ISSUING_DN,
        "--ocsp-responder", f"{LabPki.ISSUING_DN}={fresh_responder.url}",
        "--ocsp-timeout", str(OCSP_TIMEOUT), "--shutdown-grace", "10",
    ]  # fmt: skip
    process = Process("mtls-authz", argv, tmp_path / "authz.log").start()
    try:
        process.wait_until(lambda: tcp_open(port), 30, "listening")
        yield process, port
    finally:
        process.stop()


def check_request(certificate: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.certificate = certificate
    return request


async def check_many(
    port: int, requests: list[external_auth_pb2.CheckRequest]
) -> list[tuple[external_auth_pb2.CheckResponse, float]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)

        async def one(
            request: external_auth_pb2.CheckRequest,
        ) -> tuple[external_auth_pb2.CheckResponse, float]:
            started = time.monotonic()
            response = await stub.Check(request, timeout=30)
            return response, time.monotonic() - started

        return await asyncio.gather(*(one(r) for r in requests))


def test_500_concurrent_checks_of_one_cold_certificate_make_one_ocsp_request(
    authz: tuple[Process, int], fresh_responder: OcspResponder, pki: LabPki
) -> None:
    _, port = authz
    fresh_responder.delay = 0.5  # keep the first request in flight while the others arrive
    field = envoy_field(pki.client("coalesce").cert)
    results = asyncio.run(check_many(port, [check_request(field)] * 500))
    assert all(response.HasField("ok_response") for response, _ in results)
    assert fresh_responder.requests == 1


def test_a_responder_that_never_answers_costs_at_most_the_ocsp_timeout(
    authz: tuple[Process, int], fresh_responder: OcspResponder, pki: LabPki
) -> None:
    _, port = authz
    fresh_responder.mode = Mode.HANG
    fields = [envoy_field(pki.client(f"hang-{i}").cert) for i in range(20)]
    results = asyncio.run(check_many(port, [check_request(f) for f in fields]))
    for response, elapsed in results:
        assert response.denied_response.status.code == 503
        assert json.loads(response.denied_response.body)["error"] == "revocation_check_failed"
        assert elapsed < OCSP_TIMEOUT + 1.5  # generous margin: a bound, not a speed target


def test_failures_are_remembered_briefly_so_a_dead_responder_is_not_hammered(
    authz: tuple[Process, int], fresh_responder: OcspResponder, pki: LabPki
) -> None:
    _, port = authz
    fresh_responder.mode = Mode.HTTP_500
    field = envoy_field(pki.client("hammer").cert)
    for _ in range(3):
        results = asyncio.run(check_many(port, [check_request(field)] * 10))
        assert all(r.denied_response.status.code == 503 for r, _ in results)
    assert fresh_responder.requests == 1


def test_sigterm_lets_an_in_flight_check_finish(
    authz: tuple[Process, int], fresh_responder: OcspResponder, pki: LabPki
) -> None:
    process, port = authz
    fresh_responder.delay = OCSP_TIMEOUT * 0.8
    field = envoy_field(pki.client("drain").cert)

    async def scenario() -> external_auth_pb2.CheckResponse:
        task = asyncio.create_task(check_many(port, [check_request(field)]))
        await asyncio.sleep(OCSP_TIMEOUT * 0.3)  # the Check is now waiting on the responder
        process.signal(signal.SIGTERM)
        ((response, _),) = await task
        return response

    response = asyncio.run(scenario())
    assert response.HasField("ok_response")
    assert process.wait(timeout=15) == 0
