"""In-process cost of one Check with a warm OCSP cache: the servicer called directly, no gRPC.

Isolates mtls-authz's own work from gRPC and the network. Runs variants side by side in one
process (same machine state) and prints calls/s and µs/call for each; `--profile` prints the top
functions of the full variant (cProfile).

    .venv/bin/python -m benchmarks.check_path [--calls 20000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import time
from collections.abc import Callable
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from prometheus_client import CollectorRegistry

from authz.core.authorizer import Authorizer
from authz.core.check import Runtime
from authz.core.decision import State
from authz.core.issuers import IssuerPolicy
from authz.core.modes import RevocationMode
from authz.core.trust import TrustBundle
from authz.core.verdict import CertHeaderFormat, VerdictRules
from authz.demo.pki import LabPki
from authz.revocation.ocsp_source import OcspChecker, OcspConfig, new_cache
from authz.service.checks import CheckService
from authz.service.metrics import Metrics
from authz.transports.grpc_check import AuthorizationServicer
from benchmarks.floor_server import RESPONSE as FLOOR_RESPONSE
from benchmarks.requests import check_request
from tests.ocsp_responder import build_response


class FixedFetcher:
    """Answers every request with one good response (the cache makes it one request anyway)."""

    def __init__(self, der: bytes) -> None:
        self.der = der

    async def fetch(self, url: str, request_der: bytes) -> bytes:
        return self.der

    def unusable(self, url: str) -> None:
        raise AssertionError(f"the prepared answer from {url} did not verify")


def make_servicer(
    pki: LabPki, leaf_der_response: bytes, with_metrics: bool, verdict_ttl: float = 30.0
) -> AuthorizationServicer:
    metrics = Metrics(CollectorRegistry()) if with_metrics else None
    state = State(
        TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    checker = OcspChecker(
        FixedFetcher(leaf_der_response),
        new_cache(100_000),
        OcspConfig(overrides={}),
        metrics,
    )
    runtime = Runtime(
        Authorizer(state, checker, RevocationMode.REQUIRE),
        VerdictRules(
            "X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=verdict_ttl
        ),
    )
    return AuthorizationServicer(CheckService(lambda: runtime, metrics))


async def run(servicer: Any, request: external_auth_pb2.CheckRequest, calls: int) -> float:
    """Each call gets a freshly parsed request and its response serialized, as under gRPC."""
    wire = request.SerializeToString()
    parse = external_auth_pb2.CheckRequest.FromString
    await servicer.Check(parse(wire), None)  # warm the caches
    started = time.perf_counter()
    for _ in range(calls):
        (await servicer.Check(parse(wire), None)).SerializeToString()
    return time.perf_counter() - started


class Floor:
    """The floor servicer's handler, for the same loop."""

    async def Check(self, request: Any, context: Any) -> Any:
        return FLOOR_RESPONSE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    pki = LabPki.create()
    client = pki.client("bench", ocsp_url="http://127.0.0.1:9/ocsp")
    response = build_response((client.cert, pki.issuing.cert), pki.issuing)
    request = check_request(client.cert, pki.issuing.cert)
    variants: dict[str, Callable[[], Any]] = {
        "floor (constant reply)": Floor,
        "full (metrics + logs)": lambda: make_servicer(pki, response, True),
        "no metrics": lambda: make_servicer(pki, response, False),
        "no verdict metadata": lambda: make_servicer(pki, response, True, 0.0),
    }
    print(f"{'variant':<24} {'calls/s':>10} {'µs/call':>9}")
    for name, factory in variants.items():
        elapsed = asyncio.run(run(factory(), request, args.calls))
        print(f"{name:<24} {args.calls / elapsed:>10.0f} {elapsed / args.calls * 1e6:>9.1f}")
    if args.profile:
        servicer = variants["full (metrics + logs)"]()
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(run(servicer, request, args.calls))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
