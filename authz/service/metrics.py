"""Prometheus metrics, on an injected registry so tests (and several instances) stay apart.

Label values are bounded: reasons and outcomes are closed sets, and a responder is its `host:port`
with at most MAX_RESPONDER_LABELS distinct values (the rest count as "other"). No certificate
subject or serial is ever a label.

What every Check counts (its decision, its duration, its revocation cache lookup) is tallied as
plain numbers and added to the Prometheus metrics in one step (`flush`): at every scrape, before
anything is read, and under --workers every second (the supervisor reads the workers' files).
Counting a Check then costs a few dictionary and list updates rather than a Prometheus
observation each (locks, bucket search).
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from authz import __version__
from authz.core.blocks import BlockKind, BlockList
from authz.core.reasons import Reason
from authz.core.trust import TrustBundle
from authz.revocation.fetch import responder_label

# Set by the --workers supervisor for its workers: metric values then live in shared files.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
MAX_RESPONDER_LABELS = 32
OTHER_RESPONDER = "other"
# From 100 µs: a cached Check takes well under a millisecond; a cold one waits on the responder.
CHECK_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
OCSP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FlushFirst:
    """A collector with no metrics of its own, registered before all the others: collecting the
    registry (a scrape, `get_sample_value`) adds what is tallied before any metric is read."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        self._flush()
        return ()


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # The Checks' tally (see the module docstring): decisions by their labels, durations by
        # bucket (the last one +Inf) and their sum, cache lookups by result.
        self._decided: dict[tuple[str, str, str], int] = {}
        self._durations = [0] * (len(CHECK_BUCKETS) + 1)
        self._duration_sum = 0.0
        self._looked_up: dict[str, int] = {}
        registry.register(FlushFirst(self.flush))
        self.decisions = Counter(
            "mtls_authz_decisions",
            "Check decisions: allow, deny (by reason), or cancelled before a decision; by the "
            "transport Envoy used (grpc, http).",
            ["decision", "reason", "transport"],
            registry=registry,
        )
        self.check_duration = Histogram(
            "mtls_authz_check_duration_seconds",
            "Time to answer one Check, revocation included.",
            buckets=CHECK_BUCKETS,
            registry=registry,
        )
        self.ocsp_requests = Counter(
            "mtls_authz_ocsp_requests",
            "Revocation fetches by source (ocsp, crl), responder and outcome (good, revoked, "
            "unknown, loaded, or a failure).",
            ["responder", "outcome", "source"],
            registry=registry,
        )
        self.ocsp_duration = Histogram(
            "mtls_authz_ocsp_request_duration_seconds",
            "Time for one OCSP request: fetch and verification.",
            ["responder"],
            buckets=OCSP_BUCKETS,
            registry=registry,
        )
        self.cache_entries = Gauge(
            "mtls_authz_ocsp_cache_entries",
            "OCSP answers in the cache.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cache_lookups = Counter(
            "mtls_authz_ocsp_cache_lookups",
            "OCSP cache lookups: hit, miss, coalesced (joined a request in flight), "
            "stale_refresh (served while refreshing).",
            ["result"],
            registry=registry,
        )
        self.shared_cache = Counter(
            "mtls_authz_shared_cache",
            "Shared revocation cache (Redis/Valkey) operations: hit (a verified, fresh answer), "
            "miss, refused (read but does not verify: invalid, another answer, another signer), "
            "stale (verifies, but past 80 % of its life from its thisUpdate), written, "
            "lock_wait (another replica was asking the responder), lock_wait_hit (its answer "
            "arrived), error (timeout, connection, bad reply).",
            ["result"],
            registry=registry,
        )
        self.shared_cache_up = Gauge(
            "mtls_authz_shared_cache_up",
            "1 while the shared revocation cache answers; 0 while it does not (found at start or "
            "reload, or its breaker skips it), and 0 without revocation_cache_url.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.bundle_certificates = Gauge(
            "mtls_authz_trust_bundle_certificates",
            "CA certificates in the trust bundle.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.bundle_not_after = Gauge(
            "mtls_authz_trust_bundle_not_after_seconds",
            "Unix time at which the first CA certificate in the trust bundle expires.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.blocks = Gauge(
            "mtls_authz_blocks",
            "Emergency block list entries in force, by kind (fingerprint, serial, spki, "
            "subject, uri).",
            ["kind"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.blocks_generation = Gauge(
            "mtls_authz_blocks_generation",
            "The block list's generation (its content's digest, as a number): replicas holding "
            "the same list show the same value.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.blocks_source_up = Gauge(
            "mtls_authz_blocks_source_up",
            "1 while a block list source (file, store) is read as it is now; 0 while its last "
            "list is enforced because it cannot be (malformed file, store unreachable).",
            ["source"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.blocks_synced = Gauge(
            "mtls_authz_blocks_last_sync_timestamp_seconds",
            "Unix time of the last successful read of a block list source (age: time() - this).",
            ["source"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.blocked_checks = Counter(
            "mtls_authz_blocked_checks",
            "Checks refused by the block list, by the kind of entry that matched.",
            ["kind"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "mtls_authz_config_reloads",
            "Configuration and trust bundle reloads by result (success, error).",
            ["result"],
            registry=registry,
        )
        build_info = Gauge(
            "mtls_authz_build_info",
            "Build information.",
            ["version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        build_info.labels(version=__version__).set(1)
        self._responders: set[str] = set()
        self._cache_size: Callable[[], int] | None = None
        # Children looked up once per (decision, reason, transport): every Check touches them.
        self._children: dict[tuple[str, str, str], Counter] = {}
        self.prepare("grpc")
        self._lookups = {
            r: self.cache_lookups.labels(result=r)
            for r in ("hit", "miss", "coalesced", "stale_refresh")
        }
        for result in ("success", "error"):
            self.config_reloads.labels(result=result)
        for kind in BlockKind:
            self.blocks.labels(kind=kind.value)
            self.blocked_checks.labels(kind=kind.value)
        self._shared = {
            r: self.shared_cache.labels(result=r)
            for r in (
                "hit",
                "miss",
                "refused",
                "stale",
                "written",
                "lock_wait",
                "lock_wait_hit",
                "error",
            )
        }

    def prepare(self, transport: str) -> None:
        """Export every decision and reason of a transport from the start, at 0."""
        for reason in Reason:
            for decision in ("deny", "audit_deny"):
                self._child((decision, reason.value, transport))
        for decision in ("allow", "cancelled"):
            self._child((decision, "none", transport))

    def _child(self, key: tuple[str, str, str]) -> Counter:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.decisions.labels(*key)
        return child

    def _count(self, decision: str, reason: str, transport: str, seconds: float) -> None:
        key = (decision, reason, transport)
        self._decided[key] = self._decided.get(key, 0) + 1
        self._durations[bisect_left(CHECK_BUCKETS, seconds)] += 1  # `le`: the first bound ≥
        self._duration_sum += seconds

    def observe_decision(
        self, allowed: bool, reason: Reason | None, seconds: float, transport: str = "grpc"
    ) -> None:
        if allowed:
            self._count("allow", "none", transport, seconds)
        else:
            self._count("deny", (reason or Reason.INTERNAL_ERROR).value, transport, seconds)

    def observe_audit_deny(self, reason: Reason, seconds: float, transport: str = "grpc") -> None:
        """Audit mode: let through, but this is what enforcement would have refused."""
        self._count("audit_deny", reason.value, transport, seconds)

    def observe_cancelled(self, seconds: float, transport: str = "grpc") -> None:
        """A Check abandoned before a decision (Envoy's timeout, or shutdown)."""
        self._count("cancelled", "none", transport, seconds)

    def flush(self) -> None:
        """Add the tally to the Prometheus metrics, and start it afresh."""
        decided, self._decided = self._decided, {}
        for key, count in decided.items():
            self._child(key).inc(count)
        looked_up, self._looked_up = self._looked_up, {}
        for result, count in looked_up.items():
            (self._lookups.get(result) or self.cache_lookups.labels(result=result)).inc(count)
        durations, total = self._durations, self._duration_sum
        if any(durations):
            self._durations, self._duration_sum = [0] * len(durations), 0.0
            # Histogram has no public call adding many observations at once: these are the
            # buckets and sum `observe` adds to (tests/unit/test_metrics.py holds the result
            # to what `observe` gives, value for value).
            histogram = self.check_duration
            histogram._sum.inc(total)
            for bucket, count in zip(histogram._buckets, durations, strict=True):
                if count:
                    bucket.inc(count)

    def responder(self, url: str) -> str:
        """The bounded label for a responder URL."""
        label = responder_label(url)
        if label in self._responders:
            return label
        if len(self._responders) >= MAX_RESPONDER_LABELS:
            return OTHER_RESPONDER
        self._responders.add(label)
        return label

    def observe_revocation_fetch(self, source: str, url: str, outcome: str, seconds: float) -> None:
        label = self.responder(url)
        self.ocsp_requests.labels(responder=label, outcome=outcome, source=source).inc()
        self.ocsp_duration.labels(responder=label).observe(seconds)

    def observe_cache_lookup(self, result: str) -> None:
        self._looked_up[result] = self._looked_up.get(result, 0) + 1

    def observe_shared_cache(self, result: str) -> None:
        self._shared[result].inc()

    def observe_shared_cache_up(self, up: bool) -> None:
        self.shared_cache_up.set(1 if up else 0)

    def observe_blocks(self, blocks: BlockList) -> None:
        for kind, count in blocks.counts().items():
            self.blocks.labels(kind=kind.value).set(count)
        self.blocks_generation.set(int(blocks.generation[:12], 16))

    def observe_block_source(self, source: str, up: bool) -> None:
        self.blocks_source_up.labels(source=source).set(1 if up else 0)

    def observe_block_sync(self, source: str) -> None:
        self.blocks_synced.labels(source=source).set(time.time())

    def observe_blocked(self, block_id: str) -> None:
        self.blocked_checks.labels(kind=block_id.partition("-")[0]).inc()

    def watch_cache_size(self, size: Callable[[], int]) -> None:
        """Read at scrape time; under --workers, written by `refresh` (values live in files)."""
        self._cache_size = size
        if not MULTIPROCESS:
            self.cache_entries.set_function(lambda: float(size()))

    def refresh(self) -> None:
        """Under --workers: publish what is read at scrape time in a single process."""
        self.flush()
        if MULTIPROCESS and self._cache_size is not None:
            self.cache_entries.set(self._cache_size())

    def observe_trust_bundle(self, bundle: TrustBundle) -> None:
        self.bundle_certificates.set(len(bundle.certificates))
        if bundle.certificates:
            earliest = min(c.not_valid_after_utc for c in bundle.certificates)
            self.bundle_not_after.set(earliest.timestamp())

    def observe_reload(self, success: bool) -> None:
        self.config_reloads.labels(result="success" if success else "error").inc()
