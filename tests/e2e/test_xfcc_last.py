"""`xfcc_element: last` behind the real Envoy with APPEND_FORWARD: Envoy keeps whatever XFCC the
client sent, verbatim, in front of its own element. Whatever the client writes there — the
victim's public certificate in Envoy's form, unbalanced or escaped quotes, stray commas,
semicolons and `=` — only the certificate Envoy verified reaches the decision and the backend."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.pki import Identity, LabPki, make_leaf
from authz.demo.stack import LocalStack
from tests.ocsp_responder import OcspResponder
from tests.support import edited_template, gateway_hcm, http_filter
from tests.unit.test_xfcc_source import steering_prefixes


def append_forward(config: dict[str, Any]) -> None:
    hcm = gateway_hcm(config)
    hcm["forward_client_cert_details"] = "APPEND_FORWARD"
    hcm["set_current_client_cert_details"] = {"cert": True, "chain": True, "subject": True}
    # As the gateways that need XFCC do: the filter does not send Envoy's peer certificate.
    http_filter(config, "envoy.filters.http.ext_authz").pop("include_peer_certificate")


@pytest.fixture(scope="module")
def gateway(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("xfcc-last")
    template = edited_template(SHIPPED_ENVOY_DIR / "envoy.yaml", workdir / "t.yaml", append_forward)
    with LocalStack(
        workdir / "stack", pki, envoy_binary=envoy, envoy_template=template,
        ocsp_override=responder.url,
        authz_args=["--certificate-source", "xfcc", "--xfcc-element", "last", "--log-level", "debug"],
    ) as stack:  # fmt: skip
        yield stack


def der(identity: Identity) -> str:
    return base64.b64encode(identity.cert.public_bytes(Encoding.DER)).decode()


def decided_on(stack: LocalStack) -> set[str]:
    """SHA-256 of every certificate mtls-authz logged a decision about."""
    seen = set()
    for line in (stack.workdir / "authz.log").read_text().splitlines():
        if line.startswith("{") and '"decision"' in line:
            seen.add(json.loads(line).get("sha256"))
    return seen


def test_honest_traffic_passes_with_its_own_certificate(gateway: LocalStack, pki: LabPki) -> None:
    client = pki.client("last-honest")
    upstream = f"By=spiffe://lab/edge;Hash={'0' * 64}"  # a farther proxy's element, say
    for headers in ([], [f"X-Forwarded-Client-Cert: {upstream}"]):
        result = gateway.curl(client, "/last/honest", headers=headers)
        assert result.status == 200, result.body
        assert result.json()["headers"]["x-client-cert"] == [der(client)]


@pytest.mark.parametrize("cn", ['quote"r', "back\\slash", "semi;colon,comma=eq"])
def test_a_client_sent_xfcc_never_puts_another_certificate_in_play(
    gateway: LocalStack, pki: LabPki, cn: str
) -> None:
    victim = pki.client(f"last-victim-{len(cn)}")
    client = make_leaf(cn, pki.issuing)
    victim_hash = victim.cert.fingerprint(hashes.SHA256()).hex()
    for n, prefix in enumerate(steering_prefixes(victim)):
        result = gateway.curl(
            client, f"/last/{len(cn)}/{n}", headers=[f"X-Forwarded-Client-Cert: {prefix}"]
        )
        if result.status == 200:
            assert result.json()["headers"]["x-client-cert"] == [der(client)], prefix
        else:
            assert result.status == 400 and result.json()["error"] == "xfcc_invalid", prefix
    assert victim_hash not in decided_on(gateway)
    assert client.cert.fingerprint(hashes.SHA256()).hex() in decided_on(gateway)


def test_a_gateway_that_writes_sans_is_refused_in_last_mode(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path: Path
) -> None:
    """Envoy writes URI unquoted: a SAN could append a forged element. Configured so, every
    request is refused with the reason, not decided on a certificate that might be forged."""

    def with_uri(config: dict[str, Any]) -> None:
        append_forward(config)
        gateway_hcm(config)["set_current_client_cert_details"]["uri"] = True

    template = edited_template(SHIPPED_ENVOY_DIR / "envoy.yaml", tmp_path / "t.yaml", with_uri)
    client = make_leaf("uri-client", pki.issuing, uris=["spiffe://lab/ok"])
    with LocalStack(
        tmp_path / "stack", pki, envoy_binary=envoy, envoy_template=template,
        ocsp_override=responder.url,
        authz_args=["--certificate-source", "xfcc", "--xfcc-element", "last"],
    ) as stack:  # fmt: skip
        result = stack.curl(client, "/last/uri", headers=['X-Forwarded-Client-Cert: x="'])
    assert result.status == 400 and result.json()["error"] == "xfcc_invalid"
    assert "no element may carry URI or DNS" in result.json()["message"]
