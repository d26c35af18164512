"""deploy/integrations rendered offline: every object validated (Kubernetes' own kinds against
the Kubernetes schemas, the gateway projects' kinds against schemas generated from their CRDs by
kubernetes-models), and every reference between the gateway's resources and mtls-authz checked."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from authz.service.settings import CertificateSourceKind, load_settings
from tests.e2e.test_kubernetes import KUBERNETES_VERSIONS, authz_env, find, kustomize

REPO = Path(__file__).resolve().parents[2]
INTEGRATIONS = REPO / "deploy" / "integrations"
MODELS = Path(os.environ.get("AUTHZ_TEST_K8S_MODELS", REPO / ".venv" / "k8s-models"))
EXPECTED_SOURCE = {
    "istio": CertificateSourceKind.XFCC,
    "envoy-gateway": CertificateSourceKind.XFCC,
    "contour": CertificateSourceKind.PEER,
}
SERVICE_HOST = "mtls-authz.mtls-authz.svc.cluster.local"


def crd_errors(objects: list[dict[str, Any]]) -> dict[str, str | None]:
    """`kind/name` → the CRD schema's complaint (None when the object is valid)."""
    done = subprocess.run(
        ["node", str(MODELS / "validate.mjs")], input=json.dumps(objects), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    return {f"{r['kind']}/{r['name']}": r["error"] for r in results}


@pytest.fixture(scope="module", params=sorted(EXPECTED_SOURCE))
def integration(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(INTEGRATIONS / request.param)


def test_every_object_is_valid_for_its_kind(integration: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = integration
    if name == "istio":
        objects = [*objects, yaml.safe_load((INTEGRATIONS / name / "mesh-config.yaml").read_text())]
    core = [o for o in objects if "." not in o["apiVersion"].split("/")[0] or
            (o["apiVersion"].split("/")[0].endswith(".k8s.io") and "gateway" not in o["apiVersion"])]  # fmt: skip
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    custom = [o for o in objects if o not in core]
    assert custom, "every integration has gateway resources"
    assert crd_errors(custom) == {f"{o['kind']}/{o['metadata']['name']}": None for o in custom}


def test_the_crd_schemas_do_refuse_a_wrong_value() -> None:
    """The validator is not a rubber stamp: an unknown XFCC mode and a string port are refused."""
    objects = kustomize(INTEGRATIONS / "envoy-gateway")
    policy = find(objects, "ClientTrafficPolicy", "mtls")
    policy["spec"]["headers"]["xForwardedClientCert"]["mode"] = "SanitizeEverything"
    security = find(objects, "SecurityPolicy", "mtls-authz")
    security["spec"]["extAuth"]["grpc"]["backendRefs"][0]["port"] = "grpc"
    errors = crd_errors([policy, security])
    assert errors["ClientTrafficPolicy/mtls"] and errors["SecurityPolicy/mtls-authz"]


def test_mtls_authz_reads_the_certificate_where_this_gateway_puts_it(
    integration: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    name, objects = integration
    config_map = find(objects, "ConfigMap", "mtls-authz-config")
    config = tmp_path / "config.yaml"
    config.write_text(config_map["data"]["config.yaml"])
    settings = load_settings(config, authz_env(objects), {})  # the file, then the pod's env
    assert settings.certificate_source is EXPECTED_SOURCE[name]
    service = find(objects, "Service", "mtls-authz")
    assert service["metadata"]["namespace"] == "mtls-authz"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 9191


def test_the_gateway_s_pods_may_reach_the_grpc_port(
    integration: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = integration
    policy = find(objects, "NetworkPolicy", "mtls-authz")
    namespaces = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if "namespaceSelector" in peer and peer["namespaceSelector"].get("matchLabels")
    }
    gateway_namespace = {
        "istio": "istio-system", "envoy-gateway": "envoy-gateway-system", "contour": "projectcontour"
    }[name]  # fmt: skip
    assert gateway_namespace in namespaces


def test_istio_calls_the_service_through_the_custom_provider() -> None:
    objects = kustomize(INTEGRATIONS / "istio")
    mesh = yaml.safe_load((INTEGRATIONS / "istio" / "mesh-config.yaml").read_text())
    (provider,) = mesh["spec"]["meshConfig"]["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert (grpc["service"], grpc["port"], grpc["failOpen"]) == (SERVICE_HOST, 9191, False)
    policy = find(objects, "AuthorizationPolicy", "mtls-authz")
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"]["name"] == provider["name"]
    gateway = find(objects, "Gateway", "mtls-gateway")
    assert gateway["spec"]["servers"][0]["tls"]["mode"] == "MUTUAL"
    assert gateway["spec"]["selector"] == policy["spec"]["selector"]["matchLabels"]


def test_envoy_gateway_sends_the_certificate_in_xfcc_and_the_route_to_mtls_authz() -> None:
    objects = kustomize(INTEGRATIONS / "envoy-gateway")
    traffic = find(objects, "ClientTrafficPolicy", "mtls")
    xfcc = traffic["spec"]["headers"]["xForwardedClientCert"]
    assert xfcc["mode"] == "SanitizeSet" and "Cert" in xfcc["certDetailsToAdd"]
    assert traffic["spec"]["tls"]["clientValidation"]["caCertificateRefs"]
    security = find(objects, "SecurityPolicy", "mtls-authz")
    (backend,) = security["spec"]["extAuth"]["grpc"]["backendRefs"]
    assert (backend["name"], backend["namespace"], backend["port"]) == (
        "mtls-authz",
        "mtls-authz",
        9191,
    )
    assert security["spec"]["extAuth"]["failOpen"] is False
    grant = find(objects, "ReferenceGrant", "mtls-authz-from-app")
    assert grant["metadata"]["namespace"] == backend["namespace"]
    assert grant["spec"]["from"] == [
        {"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": "app"}
    ]


def test_contour_sends_requests_to_the_extension_service() -> None:
    objects = kustomize(INTEGRATIONS / "contour")
    extension = find(objects, "ExtensionService", "mtls-authz")
    assert extension["spec"]["services"] == [{"name": "mtls-authz", "port": 9191}]
    assert extension["spec"]["protocol"] == "h2c"
    proxy = find(objects, "HTTPProxy", "app")
    authorization = proxy["spec"]["virtualhost"]["authorization"]
    assert authorization["extensionRef"] == {"name": "mtls-authz", "namespace": "mtls-authz"}
    assert authorization["failOpen"] is False
    assert proxy["spec"]["virtualhost"]["tls"]["clientValidation"]["caSecret"]
