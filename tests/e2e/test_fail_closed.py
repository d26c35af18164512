"""Envoy must never pass a request when mtls-authz cannot answer."""

from __future__ import annotations

from pathlib import Path

from authz.demo.ocsp_responder import OcspResponder
from authz.demo.pki import LabPki
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw


def test_service_down_means_503_and_nothing_reaches_the_backend(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    client = pki.client("e2e-down")
    with LocalStack(tmp_path, pki, envoy_binary=envoy, ocsp_override=responder.url) as stack:
        assert stack.curl(client, "/before").status == 200
        assert stack.authz is not None
        assert stack.authz.stop() == 0
        result = stack.curl(client, "/while-down")
        assert result.status == 503
        assert not backend_saw(stack, "/while-down")
        stack.start_authz()
        assert stack.curl(client, "/after").status == 200
