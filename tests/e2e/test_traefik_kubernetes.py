"""deploy/integrations/traefik rendered offline: Kubernetes' own kinds against the Kubernetes
schemas, Traefik's kinds against the openAPIV3Schema of Traefik 3.7's own CRDs (unknown fields
refused, as `kubectl apply` does by default), and every reference between Traefik's resources and
mtls-authz checked: the forward-auth address reaches the port mtls-authz listens on, Traefik's
pods are the ones admitted to it, each route strips, passes and asks in that order."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.e2e.test_kubernetes import KUBERNETES_VERSIONS, kustomize

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "deploy" / "integrations" / "traefik"
CRDS = REPO / "tests" / "k8s_models" / "traefik-crds-v3.7.yaml"
CHAIN = ["mtls-strip", "mtls-cert"]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's schema with unknown fields refused where it lists the known ones."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def crd_schemas() -> dict[str, dict[str, Any]]:
    schemas = {}
    for crd in yaml.safe_load_all(CRDS.read_text()):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schemas[f"{group}/{version['name']}/{kind}"] = schema
    return schemas


def crd_error(obj: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> str | None:
    schema = schemas.get(f"{obj['apiVersion']}/{obj['kind']}")
    if schema is None:
        return f"no schema for {obj['apiVersion']} {obj['kind']}"
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=str)
    return "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors) or None


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return kustomize(RECIPE)


def test_every_object_is_valid_for_its_kind(objects: list[dict[str, Any]]) -> None:
    traefik = [o for o in objects if o["apiVersion"].startswith("traefik.io/")]
    for obj in (o for o in objects if o not in traefik):
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)
    assert {o["kind"] for o in traefik} == {"IngressRoute", "Middleware", "TLSOption"}
    schemas = crd_schemas()
    assert {f"{o['kind']}/{o['metadata']['name']}": crd_error(o, schemas) for o in traefik} == {
        f"{o['kind']}/{o['metadata']['name']}": None for o in traefik
    }


def test_the_crd_schemas_do_refuse_a_wrong_value(objects: list[dict[str, Any]]) -> None:
    """Not a rubber stamp: an unknown client-auth type, and a misspelt field, are refused."""
    schemas = crd_schemas()
    option = copy.deepcopy(find(objects, "TLSOption", "mtls"))
    option["spec"]["clientAuth"]["clientAuthType"] = "RequireCertSometimes"
    middleware = copy.deepcopy(find(objects, "Middleware", "mtls-authz"))
    middleware["spec"]["forwardAuth"]["authResponseHeaderRegex"] = ".*"
    assert crd_error(option, schemas) and crd_error(middleware, schemas)


def test_traefik_asks_mtls_authz_where_it_listens_and_only_traefik_may(
    objects: list[dict[str, Any]],
) -> None:
    service = find(objects, "Service", "mtls-authz")
    deployment = find(objects, "Deployment", "mtls-authz")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    listen_port = int(env["MTLS_AUTHZ_FORWARD_AUTH_LISTEN"].rpartition(":")[2])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    ports = {p["port"]: named[p["targetPort"]] for p in service["spec"]["ports"]}
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    for name, path in (("mtls-authz", "/forward-auth/traefik"),
                       ("mtls-authz-admin", "/forward-auth/traefik/admin")):  # fmt: skip
        auth = find(objects, "Middleware", name)["spec"]["forwardAuth"]
        assert auth["address"] == f"http://{host}:9193{path}"
        assert ports[9193] == listen_port
        assert auth["authRequestHeaders"] == ["X-Forwarded-Tls-Client-Cert"]
    policy = find(objects, "NetworkPolicy", "mtls-authz")
    admitted = [
        rule["from"] for rule in policy["spec"]["ingress"]
        if any(p["port"] == listen_port for p in rule["ports"])
    ]  # fmt: skip
    assert admitted == [[{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
    }]]  # fmt: skip


def test_every_route_requires_a_certificate_and_strips_passes_asks_in_that_order(
    objects: list[dict[str, Any]],
) -> None:
    route = find(objects, "IngressRoute", "app")
    option = find(objects, "TLSOption", route["spec"]["tls"]["options"]["name"])
    assert option["spec"]["clientAuth"]["clientAuthType"] == "RequireAndVerifyClientCert"
    assert find(objects, "Middleware", "mtls-cert")["spec"]["passTLSClientCert"] == {"pem": True}
    strip = find(objects, "Middleware", "mtls-strip")["spec"]["headers"]
    assert strip["customRequestHeaders"] == {"X-Forwarded-Tls-Client-Cert": ""}
    for rule in route["spec"]["routes"]:
        names = [m["name"] for m in rule["middlewares"]]
        assert names[:2] == CHAIN and names[2] in ("mtls-authz", "mtls-authz-admin"), names
        for name in names:
            middleware = find(objects, "Middleware", name)
            assert middleware["metadata"]["namespace"] == route["metadata"]["namespace"]
