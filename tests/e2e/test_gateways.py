"""mtls-authz behind the ext_authz filter and XFCC settings that Istio, Envoy Gateway, Contour and
Emissary generate (tests/fixtures/gateways/, each transcribed from its project's source), on the
real Envoy: the certificate forwarded is always the one Envoy verified for the connection."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki, make_leaf
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw
from tests.support import edited_template, envoy_xfcc_element, gateway_hcm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gateways"
REPLICAS = sorted(path.stem for path in FIXTURES.glob("*.yaml"))


def replica_template(spec: dict[str, Any], out: Path) -> Path:
    """The shipped gateway with the control plane's XFCC settings and ext_authz filter(s)."""

    def edit(config: dict[str, Any]) -> None:
        hcm = gateway_hcm(config)
        hcm.update(spec["hcm"])
        others = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_authz"]
        hcm["http_filters"] = [*spec["http_filters"], *others]
        per_route = spec.get("route_typed_per_filter_config", {})
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            route.setdefault("typed_per_filter_config", {}).update(per_route)

    return edited_template(SHIPPED_ENVOY_DIR / "envoy.yaml", out, edit)


@dataclass
class Gateway:
    name: str
    stack: LocalStack
    clients: dict[str, Identity]


def der(identity: Identity) -> str:
    return base64.b64encode(identity.cert.public_bytes(Encoding.DER)).decode()


@pytest.fixture(scope="module", params=REPLICAS)
def gateway(
    request: pytest.FixtureRequest,
    envoy: str,
    pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    spec = yaml.safe_load((FIXTURES / f"{request.param}.yaml").read_text())
    workdir = tmp_path_factory.mktemp(request.param)
    victim = make_leaf("gw-victim", pki.issuing)
    element = envoy_xfcc_element(victim.cert)
    clients = {
        "good": make_leaf("gw-good", pki.issuing),
        "revoked": make_leaf("gw-revoked", pki.issuing),
        "victim": victim,
        # Envoy writes URI SANs unquoted: these try to put the victim's certificate in the header.
        "forges-element": make_leaf("gw-forges-element", pki.issuing, uris=[f"spiffe://lab/a,{element}"]),
        "forges-field": make_leaf("gw-forges-field", pki.issuing, uris=[f"spiffe://lab/b;{element.split(';', 1)[1]}"]),
    }  # fmt: skip
    ca = OpensslCa(workdir / "ca", pki.issuing)
    for name, client in clients.items():
        (ca.revoke if name == "revoked" else ca.add_valid)(client)
    with OpensslResponder(ca, workdir / "ocsp.log") as responder:
        template = replica_template(spec, workdir / "gateway.yaml")
        with LocalStack(
            workdir / "stack", pki, envoy_binary=envoy, envoy_template=template,
            ocsp_override=responder.url,
            authz_args=["--certificate-source", spec["certificate_source"]],
        ) as stack:  # fmt: skip
            yield Gateway(request.param, stack, clients)


def test_a_good_client_reaches_the_backend_with_its_own_certificate(gateway: Gateway) -> None:
    good = gateway.clients["good"]
    result = gateway.stack.curl(good, f"/{gateway.name}/good", headers=["X-Client-Cert: forged"])
    assert result.status == 200, result.body
    assert result.json()["headers"]["x-client-cert"] == [der(good)]


def test_a_revoked_client_is_refused_by_openssl_s_answer(gateway: Gateway) -> None:
    result = gateway.stack.curl(gateway.clients["revoked"], f"/{gateway.name}/revoked")
    assert result.status == 400 and result.json()["error"] == "certificate_revoked"
    assert not backend_saw(gateway.stack, f"/{gateway.name}/revoked")


def test_a_client_of_another_ca_is_refused(gateway: Gateway, pki: LabPki) -> None:
    result = gateway.stack.curl(pki.client("gw-other", pki.other), f"/{gateway.name}/other")
    assert result.status == 400 and result.json()["error"] == "issuer_not_allowed"
    assert not backend_saw(gateway.stack, f"/{gateway.name}/other")


def test_a_client_sent_xfcc_is_replaced_by_the_gateway(gateway: Gateway, pki: LabPki) -> None:
    """A good client claims to be the victim, and a client of a refused CA claims to be good:
    neither header survives the gateway."""
    victim_element = envoy_xfcc_element(gateway.clients["victim"].cert)
    good = gateway.clients["good"]
    claims = gateway.stack.curl(
        good, f"/{gateway.name}/claims", headers=[f"X-Forwarded-Client-Cert: {victim_element}"]
    )
    assert claims.status == 200 and claims.json()["headers"]["x-client-cert"] == [der(good)]
    good_element = envoy_xfcc_element(good.cert)
    other = gateway.stack.curl(
        pki.client("gw-other-claims", pki.other), f"/{gateway.name}/other-claims",
        headers=[f"X-Forwarded-Client-Cert: {good_element}"],
    )  # fmt: skip
    assert other.status == 400 and other.json()["error"] == "issuer_not_allowed"


def test_a_san_that_forges_an_element_forwards_only_its_own_certificate(gateway: Gateway) -> None:
    client = gateway.clients["forges-element"]
    result = gateway.stack.curl(client, f"/{gateway.name}/forges-element")
    assert result.status == 200, result.body
    assert result.json()["headers"]["x-client-cert"] == [der(client)]


def test_a_san_that_forges_a_second_cert_field_is_refused_or_ignored(gateway: Gateway) -> None:
    """Where the gateway writes URI SANs into XFCC (Istio), the element has two Certs: refused.
    Where it does not, the SAN never reaches the header and the client is itself."""
    client = gateway.clients["forges-field"]
    result = gateway.stack.curl(client, f"/{gateway.name}/forges-field")
    xfcc = yaml.safe_load((FIXTURES / f"{gateway.name}.yaml").read_text())["hcm"]
    if xfcc["set_current_client_cert_details"].get("uri") and gateway.name != "contour":
        assert result.status == 400 and result.json()["error"] == "xfcc_invalid"
    else:
        assert result.status == 200 and result.json()["headers"]["x-client-cert"] == [der(client)]
