"""In-process cost of one Check with a warm OCSP cache: the servicer called directly, no gRPC.

Isolates mtls-authz's own work from gRPC and the network. A lower bound: run in a tight loop,
the Check's code and data stay in the CPU's caches; under load, between gRPC's own work, the same
Check costs the server ~4× as much CPU (the `direct` section's "server CPU per request", mtls-authz
against the same-bytes floor; benchmarks/results/check-breakdown-2026-12-04.md). Runs variants side by side in one
process (same machine state), in alternating rounds, and prints calls/s and µs/call for each
(median round, and the spread); `--profile` prints the top functions of the full variant
(cProfile); `--stages` times each stage of the full variant alone (the request parsed, turned
into the core's input, decided, counted, logged, answered). The block-list variants hold 1 000 and
100 000 entries of every kind the client does not match: what a Check of a client that is not
blocked pays for the list.

    .venv/bin/python -m benchmarks.check_path [--calls 20000] [--rounds 5] [--profile] [--stages]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import hashlib
import logging
import pstats
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from prometheus_client import CollectorRegistry

from authz.core.authorizer import Authorizer
from authz.core.blocks import BlockList, Blocks, entry_from_mapping
from authz.core.check import Runtime, check
from authz.core.decision import State
from authz.core.issuers import IssuerPolicy
from authz.core.modes import RevocationMode
from authz.core.trust import TrustBundle
from authz.core.verdict import CertHeaderFormat, VerdictRules
from authz.demo.pki import LabPki
from authz.revocation.ocsp_source import OcspChecker, OcspConfig, new_cache
from authz.service.checks import CheckService
from authz.service.logs import log_decision
from authz.service.metrics import Metrics
from authz.transports.grpc_check import AuthorizationServicer, check_input, render_wire
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


def block_list(entries: int) -> Blocks:
    """`entries` entries spread over the kinds, none matching the benchmark's client."""
    kinds = ("fingerprint", "spki", "subject", "uri")
    made = []
    for n in range(entries):
        kind = kinds[n % len(kinds)]
        value: Any = hashlib.sha256(n.to_bytes(8, "big")).hexdigest()
        if kind == "subject":
            value = f"CN=blocked-{n},O=Lab"
        elif kind == "uri":
            value = f"spiffe://lab/blocked/{n}"
        made.append(entry_from_mapping({kind: value, "reason": "benchmark"}))
    return Blocks(BlockList.of(made))


def make_servicer(
    pki: LabPki,
    leaf_der_response: bytes,
    with_metrics: bool,
    verdict_ttl: float = 30.0,
    blocks: Blocks | None = None,
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
        Authorizer(state, checker, RevocationMode.REQUIRE, blocks=blocks),
        VerdictRules(
            "X-Client-Cert", CertHeaderFormat.BASE64_DER, 400, verdict_cache_ttl=verdict_ttl
        ),
    )
    return AuthorizationServicer(CheckService(lambda: runtime, metrics))


async def run(servicer: Any, request: external_auth_pb2.CheckRequest, calls: int) -> float:
    """Each call gets a freshly parsed request and its response serialized, as under gRPC."""
    wire = request.SerializeToString()
    parse = external_auth_pb2.CheckRequest.FromString
    await servicer.check_wire(parse(wire), None)  # warm the caches
    started = time.perf_counter()
    for _ in range(calls):
        await servicer.check_wire(parse(wire), None)
    return time.perf_counter() - started


class Floor:
    """The floor servicer's handler, for the same loop."""

    async def check_wire(self, request: Any, context: Any) -> Any:
        return FLOOR_RESPONSE.SerializeToString()


async def print_stages(
    servicer: AuthorizationServicer,
    request: external_auth_pb2.CheckRequest,
    calls: int,
    rounds: int,
) -> None:
    """Each stage of one returning client's Check alone, in a loop of its own: what the whole
    Check is made of (the stages' sum is close to the whole; each loop keeps its stage's code and
    data in the CPU's caches, as the whole loop does)."""
    service: Any = servicer._checks
    wire = request.SerializeToString()
    parse = external_auth_pb2.CheckRequest.FromString
    await servicer.check_wire(parse(wire), None)  # warm the caches
    parsed = parse(wire)
    core_input = check_input(parsed)
    now = dt.datetime.now(dt.UTC)
    runtime = service._runtime()
    checked = await check(runtime, core_input, now)
    assert checked.verdict.allowed, checked

    async def decision() -> None:
        await check(runtime, core_input, now)

    async def whole() -> None:
        await servicer.check_wire(parse(wire), None)

    stages: dict[str, Callable[[], Any]] = {
        "request parsed (protobuf)": lambda: parse(wire),
        "core input (check_input)": lambda: check_input(parsed),
        "clock read": lambda: dt.datetime.now(dt.UTC),
        "decision (core check)": decision,
        "counted (metrics)": lambda: service._observe(checked.decision, 0.0),
        "decision log": lambda: log_decision(checked.decision, core_input),
        "answer bytes (render_wire)": lambda: render_wire(checked.verdict),
        "whole Check (check_wire)": whole,
    }
    timings: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(rounds):
        for name, stage in stages.items():
            started = time.perf_counter()
            if asyncio.iscoroutinefunction(stage):
                for _ in range(calls):
                    await stage()
            else:
                for _ in range(calls):
                    stage()
            timings[name].append((time.perf_counter() - started) / calls * 1e6)
    print(f"{'stage':<28} {'µs':>6}  (median of {rounds} rounds; spread)")
    for name, values in timings.items():
        print(
            f"{name:<28} {statistics.median(values):>6.2f}  ({min(values):.2f}–{max(values):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--stages", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    pki = LabPki.create()
    client = pki.client("bench", ocsp_url="http://127.0.0.1:9/ocsp")
    response = build_response((client.cert, pki.issuing.cert), pki.issuing)
    request = check_request(client.cert, pki.issuing.cert)
    thousand, hundred_thousand = block_list(1_000), block_list(100_000)
    variants: dict[str, Callable[[], Any]] = {
        "floor (constant reply)": Floor,
        "full (metrics + logs)": lambda: make_servicer(pki, response, True),
        "no metrics": lambda: make_servicer(pki, response, False),
        "no verdict metadata": lambda: make_servicer(pki, response, True, 0.0),
        "full, 1 000 blocks": lambda: make_servicer(pki, response, True, blocks=thousand),
        "full, 100 000 blocks": lambda: make_servicer(pki, response, True, blocks=hundred_thousand),
    }
    micros: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, factory in variants.items():
            micros[name].append(asyncio.run(run(factory(), request, args.calls)) / args.calls * 1e6)
    print(
        f"{'variant':<24} {'calls/s':>10} {'µs/call':>9}  (median of {args.rounds} rounds; spread)"
    )
    for name, values in micros.items():
        median = statistics.median(values)
        print(
            f"{name:<24} {1e6 / median:>10.0f} {median:>9.2f}  ({min(values):.2f}–{max(values):.2f})"
        )
    # What the block list adds to a Check is one lookup: measured alone, side by side.
    leaf = client.cert
    now = dt.datetime.now(dt.UTC)
    lists = {"no blocks": Blocks(), "1 000 blocks": thousand, "100 000 blocks": hundred_thousand}
    lookups: dict[str, list[float]] = {name: [] for name in lists}
    for _ in range(args.rounds):
        for name, blocks in lists.items():
            blocks.match(leaf, now)  # its keys worked out once, as for a returning client
            timer = timeit.Timer(lambda b=blocks: b.match(leaf, now))  # type: ignore[misc]
            lookups[name].append(timer.timeit(200_000) / 200_000 * 1e6)
    for name, values in lookups.items():
        print(
            f"block lookup, {name:<15} {statistics.median(values):>6.3f} µs ({min(values):.3f}–{max(values):.3f})"
        )
    full = micros["full (metrics + logs)"]
    for name in ("full, 1 000 blocks", "full, 100 000 blocks"):
        added = [b - f for b, f in zip(micros[name], full, strict=True)]
        print(
            f"{name} − full, per round: median {statistics.median(added):+.2f} µs ({min(added):+.2f}–{max(added):+.2f})"
        )
    if args.stages:
        servicer = variants["full (metrics + logs)"]()
        asyncio.run(print_stages(servicer, request, args.calls, args.rounds))
    if args.profile:
        servicer = variants["full (metrics + logs)"]()
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(run(servicer, request, args.calls))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
