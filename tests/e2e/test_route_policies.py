"""Per-route policies and audit mode through the real Envoy (envoy/envoy-policies.yaml)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.pki import LabPki, make_leaf
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw
from tests.ocsp_responder import OcspResponder
from tests.support import envoy_field

POLICIES = {
    "admin": {
        "allowed_issuers": [LabPki.ISSUING_DN],
        "require": [{"subject_prefix": "CN=admin-"}, {"spiffe_trust_domain": "lab.example"}],
        "deny_status": 403,
    },
    "rollout": {"allowed_issuers": [LabPki.OTHER_DN], "mode": "audit", "revocation_mode": "off"},
}


@pytest.fixture(scope="module")
def policy_stack(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with LocalStack(
        tmp_path_factory.mktemp("policies"),
        pki,
        envoy_binary=envoy,
        envoy_template=SHIPPED_ENVOY_DIR / "envoy-policies.yaml",
        authz_args=["--policies", yaml.safe_dump(POLICIES)],
        ocsp_override=responder.url,
    ) as running:
        yield running


def test_admin_route_requires_the_admin_subject(policy_stack: LocalStack, pki: LabPki) -> None:
    assert policy_stack.curl(pki.client("admin-alice"), "/admin/panel").status == 200
    refused = policy_stack.curl(pki.client("bob"), "/admin/panel2")
    assert refused.status == 403
    assert refused.headers["x-mtls-authz-reason"] == "subject_not_allowed"
    assert not backend_saw(policy_stack, "/admin/panel2")


def test_spiffe_trust_domain_also_satisfies_the_admin_route(
    policy_stack: LocalStack, pki: LabPki
) -> None:
    workload = make_leaf("svc", pki.issuing)  # no SPIFFE ID: refused
    assert policy_stack.curl(workload, "/admin/x").status == 403


def test_default_route_keeps_the_top_level_policy(policy_stack: LocalStack, pki: LabPki) -> None:
    assert policy_stack.curl(pki.client("bob"), "/home").status == 200
    other = policy_stack.curl(pki.client("carol", pki.other), "/home")
    assert other.headers["x-mtls-authz-reason"] == "issuer_not_allowed"


def test_audit_route_lets_everything_through_saying_what_would_be_refused(
    policy_stack: LocalStack, pki: LabPki
) -> None:
    would_be_refused = policy_stack.curl(pki.client("dave"), "/beta/new")
    assert would_be_refused.status == 200
    assert would_be_refused.json()["headers"]["x-mtls-authz-would-deny"] == ["issuer_not_allowed"]
    fine = policy_stack.curl(
        pki.client("erin", pki.other), "/beta/new", headers=["X-Mtls-Authz-Would-Deny: forged"]
    )
    assert fine.status == 200
    assert "x-mtls-authz-would-deny" not in fine.json()["headers"]


def test_forged_would_deny_header_is_removed_on_enforced_routes(
    policy_stack: LocalStack, pki: LabPki
) -> None:
    result = policy_stack.curl(
        pki.client("frank"), "/home", headers=["X-Mtls-Authz-Would-Deny: none"]
    )
    assert "x-mtls-authz-would-deny" not in result.json()["headers"]


def test_a_route_naming_an_unknown_policy_is_refused(policy_stack: LocalStack, pki: LabPki) -> None:
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.certificate = envoy_field(pki.client("grace").cert)
    request.attributes.context_extensions["policy"] = "nope"
    with grpc.insecure_channel(f"127.0.0.1:{policy_stack.ports['authz']}") as channel:
        response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=10)
    assert response.denied_response.status.code == 500
    assert json.loads(response.denied_response.body)["error"] == "unknown_policy"


def test_policies_config_differs_from_the_plain_one_only_in_routes() -> None:
    plain = yaml.safe_load((SHIPPED_ENVOY_DIR / "envoy.yaml").read_text())
    policies = yaml.safe_load((SHIPPED_ENVOY_DIR / "envoy-policies.yaml").read_text())

    def without_routes(config: dict) -> dict:  # type: ignore[type-arg]
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"
        ]
        hcm["route_config"]["virtual_hosts"][0]["routes"] = []
        return config

    assert without_routes(plain) == without_routes(policies)
