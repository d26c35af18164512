"""Wiring: load the configuration, serve gRPC (Check + health), drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from pathlib import Path

import aiohttp
import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from authz.authorize import Authorizer, RevocationMode
from authz.decide import State
from authz.envoy_response import ResponseBuilder
from authz.names import name_key, parse_dn
from authz.policy import IssuerPolicy
from authz.revocation.cache import SingleFlightCache
from authz.revocation.checker import CacheKey, OcspChecker, OcspConfig, OcspOutcome
from authz.revocation.fetch import HttpFetcher
from authz.server.servicer import AuthorizationServicer, Runtime
from authz.settings import Settings, split_responder_override
from authz.trust import TrustBundle

log = logging.getLogger("authz.server")

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"


def load_state(settings: Settings) -> State:
    """Read the files the configuration names; raises TrustBundleError or ValueError."""
    return State(
        trust=TrustBundle.load(Path(settings.trust_bundle)),
        policy=IssuerPolicy.from_dns(settings.allowed_issuers),
    )


def ocsp_config(settings: Settings) -> OcspConfig:
    overrides = {}
    for text in settings.ocsp_responders:
        dn, url = split_responder_override(text)
        overrides[name_key(parse_dn(dn))] = url
    return OcspConfig(
        hash_name=settings.ocsp_hash,
        nonce=settings.ocsp_nonce,
        skew=settings.ocsp_skew,
        max_age=settings.ocsp_cache_max_age,
        failure_ttl=settings.ocsp_failure_cache,
        overrides=overrides,
    )


def build_runtime(settings: Settings, state: State, session: aiohttp.ClientSession) -> Runtime:
    mode = RevocationMode(settings.ocsp)
    checker = None
    if mode is not RevocationMode.OFF:
        fetcher = HttpFetcher(session, settings.ocsp_timeout, settings.ocsp_responder_concurrency)
        cache = SingleFlightCache[CacheKey, OcspOutcome](settings.ocsp_cache_size)
        checker = OcspChecker(fetcher, cache, ocsp_config(settings))
    responses = ResponseBuilder(
        cert_header=settings.cert_header,
        cert_header_format=settings.cert_header_format,
        deny_status=settings.deny_status,
        retry_after=max(1, math.ceil(settings.ocsp_failure_cache)),
    )
    return Runtime(Authorizer(state, checker, mode), responses)


def http_session() -> aiohttp.ClientSession:
    """One pooled session for every responder; proxies from the environment are not used."""
    connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=60, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)


async def serve(settings: Settings) -> int:
    state = load_state(settings)
    async with http_session() as session:
        runtime = build_runtime(settings, state, session)
        return await _serve_grpc(settings, runtime)


async def _serve_grpc(settings: Settings, runtime: Runtime) -> int:
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
            "trust_bundle_certificates": len(runtime.authorizer.state.trust.certificates),
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
