from __future__ import annotations

import subprocess

from prometheus_client import CollectorRegistry, generate_latest

from authz import __version__
from authz.core.reasons import Reason
from authz.core.trust import TrustBundle
from authz.demo.pki import LabPki
from authz.service.metrics import MAX_RESPONDER_LABELS, OTHER_RESPONDER, Metrics


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    if name == "mtls_authz_decisions_total":
        labels.setdefault("transport", "grpc")
    return metrics.registry.get_sample_value(name, labels)


def test_decisions_are_counted_by_decision_and_reason() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.observe_decision(True, None, 0.001)
    metrics.observe_decision(False, Reason.CERTIFICATE_REVOKED, 0.002)
    metrics.observe_decision(False, Reason.CERTIFICATE_REVOKED, 0.002)
    assert value(metrics, "mtls_authz_decisions_total", decision="allow", reason="none") == 1
    assert (
        value(metrics, "mtls_authz_decisions_total", decision="deny", reason="certificate_revoked")
        == 2
    )
    assert value(metrics, "mtls_authz_check_duration_seconds_count") == 3
    assert value(metrics, "mtls_authz_check_duration_seconds_bucket", le="0.0001") == 0


def test_every_reason_is_exported_from_the_start() -> None:
    metrics = Metrics(CollectorRegistry())
    for reason in Reason:
        assert value(metrics, "mtls_authz_decisions_total", decision="deny", reason=reason) == 0


def test_responder_labels_are_host_port_and_bounded() -> None:
    assert Metrics(CollectorRegistry()).responder("http://ocsp.lab:8080/p?x") == "ocsp.lab:8080"
    metrics = Metrics(CollectorRegistry())
    for i in range(MAX_RESPONDER_LABELS + 10):
        metrics.observe_revocation_fetch("ocsp", f"http://r{i}.lab/", "good", 0.01)
    labels = {
        sample.labels["responder"]
        for family in metrics.registry.collect()
        if family.name == "mtls_authz_ocsp_requests"
        for sample in family.samples
    }
    assert len(labels) == MAX_RESPONDER_LABELS + 1
    assert OTHER_RESPONDER in labels


def test_trust_bundle_gauges(pki: LabPki) -> None:
    metrics = Metrics(CollectorRegistry())
    bundle = TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert])
    metrics.observe_trust_bundle(bundle)
    assert value(metrics, "mtls_authz_trust_bundle_certificates") == 2
    earliest = min(pki.root.cert.not_valid_after_utc, pki.issuing.cert.not_valid_after_utc)
    assert value(metrics, "mtls_authz_trust_bundle_not_after_seconds") == earliest.timestamp()


def test_cache_size_is_read_when_scraped() -> None:
    metrics = Metrics(CollectorRegistry())
    entries = [1, 2, 3]
    metrics.watch_cache_size(lambda: len(entries))
    assert value(metrics, "mtls_authz_ocsp_cache_entries") == 3
    entries.append(4)
    assert value(metrics, "mtls_authz_ocsp_cache_entries") == 4


def test_build_info_and_reloads() -> None:
    metrics = Metrics(CollectorRegistry())
    assert value(metrics, "mtls_authz_build_info", version=__version__) == 1
    metrics.observe_reload(False)
    assert value(metrics, "mtls_authz_config_reloads_total", result="error") == 1
    assert value(metrics, "mtls_authz_config_reloads_total", result="success") == 0


def test_exposition_passes_promtool(pki: LabPki) -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.observe_decision(True, None, 0.001)
    metrics.observe_revocation_fetch("ocsp", "http://ocsp.lab/", "good", 0.01)
    metrics.observe_cache_lookup("hit")
    metrics.observe_trust_bundle(TrustBundle.from_certificates([pki.root.cert]))
    done = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(metrics.registry), capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# -- the Checks' tally: counted as numbers, added to the metrics at a scrape -------------------

DURATIONS = (0.00005, 0.0001, 0.0003, 0.0005, 0.02, 0.7, 3.0, 9.0, 0.0001, 2.5)


def test_the_tally_gives_what_observing_each_check_would(pki: LabPki) -> None:
    """Bucket for bucket (a duration on a bound counts in it, `le`), the sum, the count."""
    tallied = Metrics(CollectorRegistry())
    for seconds in DURATIONS:
        tallied.observe_decision(True, None, seconds)
    histogram_text = [
        line
        for line in generate_latest(tallied.registry).decode().splitlines()
        if line.startswith("mtls_authz_check_duration_seconds") and "_created" not in line
    ]
    registry = CollectorRegistry()
    observed = Metrics(registry).check_duration
    for seconds in DURATIONS:
        observed.observe(seconds)
    expected = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("mtls_authz_check_duration_seconds") and "_created" not in line
    ]
    assert histogram_text == expected
    assert any(line.endswith(" 3.0") for line in expected if 'le="0.0001"' in line)


def test_a_scrape_adds_the_tally_once_and_counting_goes_on() -> None:
    metrics = Metrics(CollectorRegistry())
    for _ in range(3):
        metrics.observe_decision(False, Reason.ISSUER_UNKNOWN, 0.001)
        metrics.observe_cache_lookup("hit")
    metrics.observe_cancelled(0.5)
    denied = {"decision": "deny", "reason": "issuer_unknown"}
    assert value(metrics, "mtls_authz_decisions_total", **denied) == 3
    assert value(metrics, "mtls_authz_decisions_total", **denied) == 3  # not added twice
    assert value(metrics, "mtls_authz_ocsp_cache_lookups_total", result="hit") == 3
    assert value(metrics, "mtls_authz_decisions_total", decision="cancelled", reason="none") == 1
    metrics.observe_audit_deny(Reason.ISSUER_UNKNOWN, 0.001)
    metrics.observe_decision(False, Reason.ISSUER_UNKNOWN, 0.001)
    assert value(metrics, "mtls_authz_decisions_total", **denied) == 4
    assert (
        value(metrics, "mtls_authz_decisions_total", decision="audit_deny", reason="issuer_unknown")
        == 1
    )
    assert value(metrics, "mtls_authz_check_duration_seconds_count") == 6


def test_flush_writes_the_tally_without_a_scrape() -> None:
    """Under --workers the supervisor reads the workers' metric files, not their registries:
    `refresh` (every second there, and at shutdown) must put the tally into the metrics."""
    metrics = Metrics(CollectorRegistry())
    metrics.observe_decision(True, None, 0.001)
    metrics.refresh()
    child = metrics.decisions.labels("allow", "none", "grpc")
    assert child._value.get() == 1  # what a multiprocess file would hold
