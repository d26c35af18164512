"""The certificate header in each format, as the backend receives it through Envoy."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.pki import LabPki
from authz.demo.stack import LocalStack
from tests.e2e.conftest import newest_envoy
from tests.ocsp_responder import OcspResponder


def to_der(fmt: str, value: str) -> bytes:
    if fmt == "rfc9440":
        assert value[0] == value[-1] == ":"
        return base64.b64decode(value[1:-1], validate=True)
    return x509.load_pem_x509_certificate(unquote(value).encode()).public_bytes(Encoding.DER)


@pytest.mark.parametrize("fmt", ["pem-url", "rfc9440"])
def test_configured_header_name_and_format(
    fmt: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    client = pki.client(f"e2e-{fmt}")
    args = ["--cert-header", "Client-Cert", "--cert-header-format", fmt]
    with LocalStack(
        tmp_path, pki, envoy_binary=newest_envoy(), authz_args=args, ocsp_override=responder.url
    ) as stack:
        result = stack.curl(client, "/", headers=["Client-Cert: forged"])
    assert result.status == 200
    (value,) = result.json()["headers"]["client-cert"]
    assert to_der(fmt, value) == client.cert.public_bytes(Encoding.DER)
