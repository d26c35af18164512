"""Identity headers through the real Envoy: values as configured, hostile subjects made safe,
client-sent copies replaced or removed."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from authz.core.identity import IDENTITY_NAMES
from authz.demo.pki import LabPki
from authz.demo.stack import LocalStack
from tests.ocsp_responder import OcspResponder
from tests.unit.test_identity import hostile_client


def test_identity_headers_reach_the_backend_safely(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    args = [arg for name in IDENTITY_NAMES for arg in ("--identity-header", name)]
    client = hostile_client(pki)
    forged = [
        "X-Client-Cert-Subject: CN=admin",
        "Client-Cert: :Zm9yZ2Vk:",
        "X-Client-Cert-Spiffe-Id: spiffe://evil/x",
    ]
    with LocalStack(
        tmp_path, pki, envoy_binary=envoy, authz_args=args, ocsp_override=responder.url
    ) as stack:
        result = stack.curl(client, "/identity", headers=forged)
        plain = stack.curl(pki.client("identity-plain"), "/identity", headers=forged)
    assert result.status == 200, result.body
    seen = result.json()["headers"]
    assert seen["x-client-cert-subject"] == [
        'CN=evil%0D%0AX-Injected: yes\\00 \\"quoted\\"\\, %C3%BCn%C3%AFcode %2541'
    ]
    assert "x-injected" not in seen
    assert seen["x-client-cert-serial"] == ["abcdef"]
    assert seen["x-client-cert-sha256"] == [client.cert.fingerprint(hashes.SHA256()).hex()]
    assert seen["x-client-cert-spiffe-id"] == ["spiffe://lab.example/ns/web/sa/client"]
    assert seen["x-client-cert-dns-sans"] == ["a.example,b.example%2Cevil"]
    der = base64.b64encode(client.cert.public_bytes(Encoding.DER)).decode()
    assert seen["client-cert"] == [f":{der}:"]
    issuer = base64.b64encode(pki.issuing.cert.public_bytes(Encoding.DER)).decode()
    assert seen["client-cert-chain"] == [f":{issuer}:"]  # from Envoy's XFCC
    assert seen["x-client-cert-chain"] == [f":{issuer}:"]
    # A certificate without SANs: the forged SPIFFE ID is removed, not passed through.
    plain_seen = plain.json()["headers"]
    assert "x-client-cert-spiffe-id" not in plain_seen
    assert plain_seen["x-client-cert-subject"] == ["CN=identity-plain,O=Lab"]
