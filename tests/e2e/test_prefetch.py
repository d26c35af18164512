"""Prefetch through the real Envoy: a client returning after its answer's life finds it fresh."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from authz.demo.pki import LabPki
from authz.demo.processes import free_port
from authz.demo.stack import LocalStack
from tests.ocsp_responder import OcspResponder


def test_prefetch_keeps_a_returning_client_warm(
    envoy: str, pki: LabPki, fresh_responder: OcspResponder, tmp_path: Path
) -> None:
    """Answers live 2 s; the client comes back after 4 s of silence and does not wait."""
    metrics_port = free_port()
    args = ["--ocsp-cache-max-age", "2", "--prefetch-window", "60",
            "--metrics-listen", f"127.0.0.1:{metrics_port}"]  # fmt: skip
    client = pki.client("prefetched")
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, authz_args=args, ocsp_override=fresh_responder.url
    ) as stack:
        assert stack.curl(client, "/first").status == 200
        time.sleep(4.0)
        assert fresh_responder.requests >= 2  # refreshed without being asked
        assert stack.curl(client, "/again").status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
            text = page.read().decode()
    assert 'mtls_authz_ocsp_cache_lookups_total{result="miss"} 1.0' in text
    assert 'mtls_authz_ocsp_cache_lookups_total{result="hit"} 1.0' in text
