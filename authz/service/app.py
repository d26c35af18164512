"""Wiring: configuration → runtime; gRPC (Check + health) and the HTTP side server; reload; drain.

Lifecycle: not ready → (files loaded, gRPC started) ready → (SIGTERM) not ready, draining →
stopped. /readyz and the gRPC health service say the same thing at every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import CollectorRegistry

from authz.blocklist.store import BlockStore
from authz.blocklist.sync import BlockObserver, BlockSync
from authz.client_cert.forwarded import FORWARD_AUTH_PROXIES
from authz.core.authorizer import Authorizer
from authz.core.blocks import BlockList, Blocks
from authz.core.check import CheckHandler, Runtime
from authz.core.decision import State, VerifiedMemo
from authz.core.issuers import IssuerPolicy, issuers_without_ca, reversed_issuers
from authz.core.modes import EnforcementMode, RevocationMode
from authz.core.policies import DEFAULT_POLICY, PolicySpec
from authz.core.revocation import RevocationSource
from authz.core.trust import TrustBundle, TrustBundleError
from authz.core.verdict import VerdictRules
from authz.revocation.cache import SingleFlightCache
from authz.revocation.compact import key_parts
from authz.revocation.crl_source import CRL_READ_PACE, CrlChecker, CrlKey, CrlLoad
from authz.revocation.crl_worker import CrlVerifier
from authz.revocation.fetch import HttpFetcher
from authz.revocation.loading import SourceUrls, issuer_fingerprint
from authz.revocation.ocsp_source import CacheKey, OcspChecker
from authz.revocation.ocsp_source import new_cache as new_ocsp_cache
from authz.revocation.prefetch import Prefetcher, Target
from authz.revocation.redis_store import RedisStore
from authz.revocation.shared import SharedAnswers
from authz.service import logs, workers
from authz.service import ops_http as http
from authz.service.checks import CheckService
from authz.service.metrics import MULTIPROCESS, Metrics
from authz.service.readiness import Readiness
from authz.service.reload import FileWatcher
from authz.service.settings import (
    RESTART_ONLY,
    ConfigError,
    Settings,
    load_settings,
)
from authz.transports.grpc_check import AuthorizationServicer, add_to_server
from authz.transports.http.envoy import EnvoyHttpServer
from authz.transports.http.forward_auth import ForwardAuthServer

log = logging.getLogger("authz.server")

RELOAD_POLL_SECONDS = 2.0
# Settings read once at start; a reload that changes them is applied except for these.
CRL_CACHE_SIZE = 1024  # CRLs: one per issuer and URL
# How long a starting replica waits for the shared store's block list before serving without it.
BLOCK_START_WAIT = 2.0
Keep = Callable[[bytes, str], bool]


def load_state(settings: Settings) -> State:
    """Read the files the configuration names; raises TrustBundleError or ValueError, the
    message starting with the key that names the file."""
    try:
        trust = TrustBundle.load(Path(settings.trust_bundle))
    except TrustBundleError as e:
        raise TrustBundleError(f"trust_bundle: {e}") from None
    subjects = [cert.subject for cert in trust.certificates]
    errors = [f"allowed_issuers: {e}" for e in reversed_issuers(settings.allowed_issuers, subjects)]
    for name, spec in settings.route_specs.items():
        if tuple(spec.allowed_issuers) != tuple(settings.allowed_issuers):
            errors += [
                f"policies.{name}.allowed_issuers: {e}"
                for e in reversed_issuers(spec.allowed_issuers, subjects)
            ]
    if errors:
        raise ValueError("; ".join(errors))
    return State(
        trust=trust,
        policy=IssuerPolicy.from_dns(settings.allowed_issuers),
        source=settings.certificate,
        allow_sha1=settings.allow_sha1_signatures,
    )


def issuer_warnings(settings: Settings, state: State) -> list[str]:
    """Allowed issuers (top level and per policy) that no CA in the bundle has as its subject."""
    subjects = [cert.subject for cert in state.trust.certificates]
    warnings = [
        f"allowed_issuers: {w}" for w in issuers_without_ca(settings.allowed_issuers, subjects)
    ]
    for name, spec in settings.route_specs.items():
        if tuple(spec.allowed_issuers) != tuple(settings.allowed_issuers):
            warnings += [
                f"policies.{name}.allowed_issuers: {w}"
                for w in issuers_without_ca(spec.allowed_issuers, subjects)
            ]
    return warnings


def policy_state(state: State, spec: PolicySpec) -> State:
    """A policy's own State: the same bundle and certificate source, its own issuers, and a
    verified-certificate memo of its own (what it proved depends on the policy)."""
    return State(
        state.trust,
        IssuerPolicy.from_dns(spec.allowed_issuers),
        spec,
        state.source,
        allow_sha1=state.allow_sha1,
    )


def shared_answers(settings: Settings, metrics: Metrics) -> SharedAnswers | None:
    """The shared revocation cache, if configured: its store, bounded per operation; waiters
    on another replica's fetch wait at most as long as that fetch may take."""
    if not settings.revocation_cache_url:
        return None
    store = RedisStore(settings.revocation_cache_url, settings.revocation_cache_timeout)
    wait = max(settings.ocsp_timeout, settings.crl_timeout)
    return SharedAnswers(
        store,
        settings.revocation_cache_timeout,
        wait,
        metrics,
        deadline=settings.revocation_deadline,
    )


def http_session() -> aiohttp.ClientSession:
    """One pooled session for every responder; proxies from the environment are not used."""
    connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=60)
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)


@dataclass(frozen=True)
class Sources:
    """Where settings come from, kept so a reload reads them the same way."""

    config_path: Path | None
    env: Mapping[str, str]
    flags: Mapping[str, Any]

    def load(self) -> Settings:
        return load_settings(self.config_path, self.env, self.flags)


@dataclass(frozen=True)
class Runtimes:
    envoy: Runtime
    forwarded: Mapping[str, Runtime]
    """Per forward-auth proxy, by the name in its URL (empty without forward_auth_listen)."""


class Service:
    """Owns what lives across reloads (session, cache, metrics) and the current Runtime."""

    def __init__(
        self, settings: Settings, sources: Sources, session: aiohttp.ClientSession, metrics: Metrics
    ) -> None:
        self.sources = sources
        self.session = session
        self.metrics = metrics
        # The block list lives across reloads: every Runtime built reads the same holder.
        self.blocks = Blocks()
        self.shared = shared_answers(settings, metrics)
        self.cache = new_ocsp_cache(settings.ocsp_cache_size)
        self.crl_cache = SingleFlightCache[CrlKey, CrlLoad](CRL_CACHE_SIZE)
        self.crl_verifier = CrlVerifier()
        metrics.watch_cache_size(lambda: len(self.cache))
        self.settings = settings
        state = load_state(settings)
        for warning in issuer_warnings(settings, state):
            log.warning("configuration: %s", warning)
        runtimes = self.build(settings, state)
        self.runtime, self.forwarded = runtimes.envoy, runtimes.forwarded
        metrics.observe_trust_bundle(self.runtime.authorizer.state.trust)

    def build(self, settings: Settings, state: State) -> Runtimes:
        """The default policy's Runtime, with one per named policy in `routes`, for Envoy and,
        with forward_auth_listen, for each forward-auth proxy (its own certificate source; no
        verdict cache); the trust bundle, the checkers and their caches are shared by all."""
        fetcher = HttpFetcher(
            self.session, settings.ocsp_timeout, settings.ocsp_responder_concurrency
        )
        checker = OcspChecker(
            fetcher, self.cache, settings.ocsp_config, self.metrics, shared=self.shared
        )
        crl_fetcher = HttpFetcher(self.session, settings.crl_timeout, pace=CRL_READ_PACE)
        crl = CrlChecker(
            crl_fetcher,
            self.crl_cache,
            settings.crl_config,
            self.metrics,
            shared=self.shared,
            verifier=self.crl_verifier,
        )
        self.checkers = (checker, crl)
        self.prefetch_targets = (
            Target(self.cache, checker.prefetch, lambda outcome: outcome.url),
            Target(self.crl_cache, crl.prefetch, lambda loaded: loaded.url),
        )
        by_name: dict[str, RevocationSource] = {"ocsp": checker, "crl": crl}
        sources = [by_name[name] for name in settings.revocation.order]

        def one(name: str, spec: PolicySpec, policy_state: State, replay: float) -> Runtime:
            mode = spec.revocation_mode
            rules = VerdictRules(
                cert_header=settings.cert_header,
                cert_header_format=settings.cert_header_format,
                deny_status=spec.deny_status,
                retry_after=max(1, math.ceil(settings.revocation_failure_cache)),
                identity=settings.identity_headers,
                verdict_cache_ttl=replay,
                policy=name,
            )
            authorizer = Authorizer(
                policy_state,
                checker,
                mode,
                [] if mode is RevocationMode.OFF else sources,
                blocks=self.blocks,
            )
            return Runtime(authorizer, rules, audit=spec.mode is EnforcementMode.AUDIT)

        def runtime(state: State, replay: float) -> Runtime:
            specs = dict(settings.route_specs)
            default_spec = specs.pop(DEFAULT_POLICY)
            allowed = tuple(default_spec.allowed_issuers)
            if default_spec.require or allowed != settings.allowed_issuers:
                state = policy_state(state, default_spec)
            routes = {
                name: one(name, spec, policy_state(state, spec), replay)
                for name, spec in specs.items()
            }
            default = one(DEFAULT_POLICY, default_spec, state, replay)
            return Runtime(default.authorizer, default.rules, default.audit, routes)

        forwarded = {}
        if settings.forward_auth_listen:
            for name, source in FORWARD_AUTH_PROXIES.items():
                own = dataclasses.replace(state, source=source, memo=VerifiedMemo())
                forwarded[name] = runtime(own, 0.0)
        return Runtimes(runtime(state, settings.verdict_cache_ttl), forwarded)

    def prune_caches(
        self,
        bundle: Sequence[x509.Certificate],
        previous: tuple[OcspChecker, CrlChecker],
    ) -> int:
        """Drop cached answers whose issuer left the bundle, or that came from a responder or
        CRL URL the configuration would no longer ask (one configured before and not now, or
        one it no longer permits): an answer is only ever served, or refreshed by prefetch,
        from the source configuration picks now."""
        kept = {issuer_fingerprint(cert): cert for cert in bundle}

        def keep(now: SourceUrls, before: SourceUrls) -> Keep:
            def check(fingerprint: bytes, url: str) -> bool:
                issuer = kept.get(fingerprint)
                if issuer is None or not now.still_picks(issuer, url):
                    return False
                return url in now.configured or url not in before.configured

            return check

        ocsp = keep(self.checkers[0].urls, previous[0].urls)
        crl = keep(self.checkers[1].urls, previous[1].urls)

        def keep_answer(key: CacheKey) -> bool:
            parts = key_parts(key)
            return ocsp(parts.issuer_fingerprint, parts.url)

        dropped = self.cache.discard(keep_answer)
        return dropped + self.crl_cache.discard(lambda key: crl(key[1], key[0]))

    def watched_files(self) -> list[Path]:
        files = [Path(self.settings.trust_bundle)]
        if self.sources.config_path is not None:
            files.append(self.sources.config_path)
        return files

    async def reload(self) -> bool:
        """Swap in a new Runtime; on any error keep the old one. In-flight Checks are unaffected."""
        previous = self.checkers, self.prefetch_targets
        try:
            settings = self.sources.load()
            state = load_state(settings)
            runtimes = self.build(settings, state)
            for warning in issuer_warnings(settings, state):
                log.warning("configuration: %s", warning)
        except (ConfigError, TrustBundleError, ValueError) as e:
            self.checkers, self.prefetch_targets = previous
            log.error("reload failed; keeping the previous configuration", extra={"error": str(e)})
            self.metrics.observe_reload(False)
            return False
        changed = [k for k in RESTART_ONLY if getattr(settings, k) != getattr(self.settings, k)]
        if changed:
            # What is in effect is what the process started with: say so, and log it so.
            log.warning(
                "changed settings need a restart; until then their old values stay in effect",
                extra={"keys": changed},
            )
            settings = dataclasses.replace(
                settings, **{key: getattr(self.settings, key) for key in changed}
            )
        if (settings.log_level, settings.log_format) != (
            self.settings.log_level,
            self.settings.log_format,
        ):
            logs.configure(settings.log_level, settings.log_format)
        self.settings, self.runtime = settings, runtimes.envoy
        if self.forwarded:  # forward_auth_listen needs a restart: only started ones are kept
            self.forwarded = runtimes.forwarded
        if self.shared is not None:
            await self.shared.probe()
        dropped = self.prune_caches(state.trust.certificates, previous[0])
        self.metrics.observe_trust_bundle(state.trust)
        self.metrics.observe_reload(True)
        log.info(
            "reloaded",
            extra={
                "config": settings.redacted(),
                "trust_bundle_certificates": len(state.trust.certificates),
                "ocsp_cache_dropped": dropped,
            },
        )
        return True


def block_sync(settings: Settings, holder: Blocks, observer: BlockObserver) -> BlockSync:
    """The block list's sources: the file, and the shared store when there is one."""
    store = None
    if settings.revocation_cache_url:
        store = BlockStore(settings.revocation_cache_url, settings.revocation_cache_timeout)
    file = Path(settings.block_list_file) if settings.block_list_file else None
    return BlockSync(holder, file, store, observer)


class _BlocksSeen:
    """Where a change of the block list is told: the metrics, and the --workers supervisor."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def observe_blocks(self, blocks: BlockList) -> None:
        self._metrics.observe_blocks(blocks)
        workers.mark_generation(os.getpid(), blocks.generation)

    def observe_block_source(self, source: str, up: bool) -> None:
        self._metrics.observe_block_source(source, up)

    def observe_block_sync(self, source: str) -> None:
        self._metrics.observe_block_sync(source)


async def serve(
    sources: Sources, settings: Settings, registry: CollectorRegistry | None = None
) -> int:
    metrics = Metrics(registry or CollectorRegistry())
    async with http_session() as session:
        service = Service(settings, sources, session, metrics)
        sync = block_sync(settings, service.blocks, _BlocksSeen(metrics))
        try:
            if service.shared is not None:
                await service.shared.probe()  # says so now, not at the first Check
            # Before serving: a replica enforces the blocks in force from its first Check.
            await sync.start(wait=BLOCK_START_WAIT)
            if sync.degraded:
                log.warning("block list degraded at start", extra={"sources": sync.degraded})
            return await _run(service, sync)
        finally:
            await sync.close()
            await service.crl_verifier.close()
            if service.shared is not None:
                await service.shared.close()


async def _preload_crls(service: Service) -> None:
    """The CRLs of crl_urls, before the replica says it is ready (Checks are already answered
    meanwhile: they share the same loads)."""
    settings = service.settings
    modes = {spec.revocation_mode for spec in settings.route_specs.values()}
    if modes == {RevocationMode.OFF} or "crl" not in settings.revocation.order:
        return
    started = time.monotonic()
    trust = service.runtime.authorizer.state.trust
    loaded = await service.checkers[1].preload(trust.certificates)
    if loaded:
        failed = {load.url: load.detail for load in loaded if load.index is None}
        log.info(
            "CRLs loaded before ready",
            extra={
                "crls": len(loaded),
                "failed": failed or None,
                "seconds": round(time.monotonic() - started, 3),
            },
        )


def _forwarded(service: Service, name: str) -> Callable[[], Runtime]:
    return lambda: service.forwarded[name]


async def _run(service: Service, sync: BlockSync) -> int:
    settings = service.settings
    # SO_REUSEPORT only for --workers: otherwise a second instance on the same port must fail
    # to start rather than silently take half of the Checks.
    reuse_port = 1 if os.environ.get(workers.WORKER_ENV) else 0
    health = HealthServicer()
    readiness = Readiness(health)
    server, listening = None, {}
    if settings.listen:
        server = grpc.aio.server(options=[("grpc.so_reuseport", reuse_port)])
        checks = CheckService(lambda: service.runtime, service.metrics, "grpc")
        add_to_server(AuthorizationServicer(checks), server)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_insecure_port(settings.listen)
        listening["grpc_listen"] = f"{settings.listen.rpartition(':')[0]}:{port}"
    http_server = None
    if settings.http_listen:
        http_server = EnvoyHttpServer(
            CheckService(lambda: service.runtime, service.metrics, "http"),
            request_timeout=settings.http_request_timeout,
            idle_timeout=settings.http_idle_timeout,
        )
        host, _, wanted = settings.http_listen.rpartition(":")
        port = await http_server.start(host, int(wanted), reuse_port=bool(reuse_port))
        listening["http_listen"] = f"{host}:{port}"
    forward_server = None
    if settings.forward_auth_listen:
        handlers: dict[str, CheckHandler] = {
            name: CheckService(_forwarded(service, name), service.metrics, "forward-auth")
            for name in service.forwarded
        }
        forward_server = ForwardAuthServer(
            handlers, settings.http_request_timeout, settings.http_idle_timeout
        )
        host, _, wanted = settings.forward_auth_listen.rpartition(":")
        port = await forward_server.start(host, int(wanted), reuse_port=bool(reuse_port))
        listening["forward_auth_listen"] = f"{host}:{port}"
    runner = None
    if settings.metrics_listen:
        app = http.make_app(
            service.metrics.registry, lambda: readiness.ready, lambda: service.blocks.generation
        )
        runner = await http.start(app, settings.metrics_listen)
    if server is not None:
        await server.start()
    # Everything loaded so far lives as long as the process: keep the cyclic GC from walking it
    # again and again under load (it showed as p99 stalls).
    gc.freeze()
    await _preload_crls(service)
    await readiness.serving()
    workers.mark_ready(os.getpid(), True)
    log.info(
        "serving",
        extra={
            **listening,
            "metrics_listen": settings.metrics_listen or None,
            "config": settings.redacted(),
            "trust_bundle_certificates": len(service.runtime.authorizer.state.trust.certificates),
        },
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watcher = FileWatcher(
        service.watched_files, lambda: _reload(service, watcher), RELOAD_POLL_SECONDS
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(service, watcher)))
    watching = loop.create_task(watcher.run())
    refreshing = loop.create_task(_refresh_metrics(service.metrics)) if MULTIPROCESS else None
    prefetcher = Prefetcher(
        lambda: service.prefetch_targets, settings.prefetch_window, settings.prefetch_rate
    )
    prefetching = loop.create_task(prefetcher.run()) if settings.prefetch_window > 0 else None
    syncing = loop.create_task(sync.run())
    await stop.wait()

    await readiness.draining()  # /readyz and gRPC health say so before the server stops
    workers.mark_ready(os.getpid(), False)
    log.info("draining", extra={"grace_seconds": settings.shutdown_grace})
    for task in (watching, refreshing, prefetching, syncing):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await asyncio.gather(
        *([server.stop(settings.shutdown_grace)] if server is not None else []),
        *([http_server.stop(settings.shutdown_grace)] if http_server is not None else []),
        *([forward_server.stop(settings.shutdown_grace)] if forward_server is not None else []),
    )
    service.metrics.flush()  # the Checks answered while draining, for a last scrape
    if runner is not None:
        await runner.cleanup()
    log.info("stopped")
    return 0


async def _reload(service: Service, watcher: FileWatcher) -> None:
    await service.reload()
    watcher.remember()


async def _refresh_metrics(metrics: Metrics) -> None:
    while True:
        metrics.refresh()
        await asyncio.sleep(1.0)
