"""Wiring: load the configuration, serve gRPC (Check + health), drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from authz.decide import State
from authz.envoy_response import ResponseBuilder
from authz.policy import IssuerPolicy
from authz.server.servicer import AuthorizationServicer, Runtime
from authz.settings import Settings
from authz.trust import TrustBundle

log = logging.getLogger("authz.server")

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"


def build_runtime(settings: Settings) -> Runtime:
    """Load files and precompute; raises TrustBundleError or ValueError before anything serves."""
    state = State(
        trust=TrustBundle.load(Path(settings.trust_bundle)),
        policy=IssuerPolicy.from_dns(settings.allowed_issuers),
    )
    responses = ResponseBuilder(
        cert_header=settings.cert_header,
        cert_header_format=settings.cert_header_format,
        deny_status=settings.deny_status,
    )
    return Runtime(state, responses)


async def serve(settings: Settings) -> int:
    runtime = build_runtime(settings)
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationServicer(lambda: runtime), server
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(settings.listen)
    await server.start()
    for service in ("", AUTHORIZATION_SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    host = settings.listen.rpartition(":")[0]
    log.info(
        "serving",
        extra={
            "grpc_listen": f"{host}:{port}",
            "config": settings.redacted(),
            "trust_bundle_certificates": len(runtime.state.trust.certificates),
        },
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("draining", extra={"grace_seconds": settings.shutdown_grace})
    await health.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace)
    log.info("stopped")
    return 0
