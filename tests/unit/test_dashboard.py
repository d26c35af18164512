"""The Grafana dashboard asks only for metrics the service exports, in valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from authz.service.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mtls-authz.json"
# Grafana's variables, replaced by what Prometheus would see.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m"}


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    result = []
    for expr in exprs:
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        result.append(expr)
    return result


def exported_series() -> set[str]:
    metrics = Metrics(CollectorRegistry())
    metrics.observe_revocation_fetch("ocsp", "http://r/", "good", 0.1)
    metrics.observe_cache_lookup("hit")
    metrics.observe_block_source("store", True)  # exported once a block list source is read
    metrics.observe_block_sync("store")
    text = generate_latest(metrics.registry).decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }


def test_dashboard_covers_what_operators_need() -> None:
    joined = " ".join(expressions())
    for needed in (
        "mtls_authz_decisions_total",
        "mtls_authz_check_duration_seconds_bucket",
        "mtls_authz_ocsp_requests_total",
        "mtls_authz_ocsp_request_duration_seconds_bucket",
        "mtls_authz_ocsp_cache_lookups_total",
        "mtls_authz_ocsp_cache_entries",
        "mtls_authz_trust_bundle_not_after_seconds",
    ):
        assert needed in joined


def test_every_metric_in_the_dashboard_is_exported() -> None:
    exported = exported_series()
    used = {name for expr in expressions() for name in re.findall(r"\bmtls_authz_\w+", expr)}
    assert used, "no metrics found in the dashboard"
    assert used <= exported, used - exported


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": expr}
                    for i, expr in enumerate(expressions())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
