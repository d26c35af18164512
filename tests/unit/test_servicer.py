from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from prometheus_client import CollectorRegistry

from authz.core.authorizer import Authorizer
from authz.core.check import Runtime
from authz.core.decision import State
from authz.core.issuers import IssuerPolicy
from authz.core.modes import RevocationMode
from authz.core.trust import TrustBundle
from authz.core.verdict import CertHeaderFormat, VerdictRules
from authz.demo.pki import LabPki
from authz.service.checks import CheckService
from authz.service.metrics import Metrics
from authz.transports import grpc_check
from authz.transports.grpc_check import AuthorizationServicer, check_input
from tests.support import envoy_field, xfcc_with_chain


class ExplodingBundle(TrustBundle):
    def find_issuer(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail")


def runtime(trust: TrustBundle) -> Runtime:
    state = State(trust, IssuerPolicy.from_dns([LabPki.ISSUING_DN]))
    return Runtime(
        Authorizer(state, None, RevocationMode.OFF),
        VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400),
    )


def make_servicer(
    runtime: Callable[[], Runtime], metrics: Metrics | None = None
) -> AuthorizationServicer:
    return AuthorizationServicer(CheckService(runtime, metrics))


def request(certificate: str, **headers: str) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    req.attributes.source.certificate = certificate
    req.attributes.request.http.path = "/p"
    req.attributes.request.http.headers.update(headers)
    return req


async def test_an_exception_becomes_a_500_deny_without_details(
    pki: LabPki, caplog: pytest.LogCaptureFixture
) -> None:
    exploding = ExplodingBundle.from_certificates([pki.issuing.cert])
    servicer = make_servicer(lambda: runtime(exploding))
    with caplog.at_level(logging.ERROR, logger="authz.check"):
        response = await servicer.Check(request(envoy_field(pki.client("s1").cert)), None)
    denied = response.denied_response
    assert not response.HasField("ok_response")
    assert denied.status.code == 500
    assert json.loads(denied.body)["error"] == "internal_error"
    assert "secret" not in denied.body and "Traceback" not in denied.body
    assert any("secret internal detail" in (r.exc_text or "") for r in caplog.records)


def test_check_input_reads_the_certificate_and_xfcc(pki: LabPki) -> None:
    xfcc = xfcc_with_chain([pki.issuing.cert])
    got = check_input(request("CERT", **{"x-forwarded-client-cert": xfcc}))
    assert (got.certificate, got.xfcc) == ("CERT", xfcc)


def test_check_input_reads_xfcc_from_raw_header_map() -> None:
    req = request("CERT")
    req.attributes.request.http.header_map.headers.add(
        key="X-Forwarded-Client-Cert", raw_value=b"Chain=x"
    )
    req.attributes.request.http.header_map.headers.add(key="x-request-id", value="rid-1")
    got = check_input(req)
    assert (got.xfcc, got.request_id) == ("Chain=x", "rid-1")


@pytest.fixture
async def channel(pki: LabPki) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    trust = TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        make_servicer(lambda: runtime(trust)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


async def test_check_over_grpc_allows_and_denies(pki: LabPki, channel: grpc.aio.Channel) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    allowed = await stub.Check(request(envoy_field(pki.client("s2").cert)), timeout=5)
    assert allowed.HasField("ok_response")
    missing = await stub.Check(request(""), timeout=5)
    assert missing.denied_response.status.code == 400
    assert json.loads(missing.denied_response.body)["error"] == "missing_certificate"


async def test_a_cancelled_check_is_counted_as_cancelled_not_as_a_decision(pki: LabPki) -> None:
    class SlowAuthorizer(Authorizer):
        async def authorize(self, *args: object) -> object:  # type: ignore[override]
            await asyncio.sleep(10)
            raise AssertionError("not reached")

    state = State(
        TrustBundle.from_certificates([pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    metrics = Metrics(CollectorRegistry())
    runtime = Runtime(
        SlowAuthorizer(state, None, RevocationMode.OFF),
        VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400),
    )
    servicer = make_servicer(lambda: runtime, metrics)
    task = asyncio.create_task(
        servicer.Check(request(envoy_field(pki.client("cancel").cert)), None)
    )
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    value = metrics.registry.get_sample_value
    assert (
        value(
            "mtls_authz_decisions_total",
            {"decision": "cancelled", "reason": "none", "transport": "grpc"},
        )
        == 1
    )
    assert (
        value(
            "mtls_authz_decisions_total",
            {"decision": "deny", "reason": "internal_error", "transport": "grpc"},
        )
        == 0
    )


async def test_audit_mode_lets_a_refusal_through_and_counts_it(pki: LabPki) -> None:
    state = State(
        TrustBundle.from_certificates([pki.issuing.cert]),
        IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
    )
    metrics = Metrics(CollectorRegistry())
    runtime = Runtime(
        Authorizer(state, None, RevocationMode.OFF),
        VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400),
        audit=True,
    )
    servicer = make_servicer(lambda: runtime, metrics)
    refused = await servicer.Check(request(envoy_field(pki.client("audit", pki.other).cert)), None)
    assert refused.HasField("ok_response")
    headers = {h.header.key: h.header.value for h in refused.ok_response.headers}
    assert headers["x-mtls-authz-would-deny"] == "issuer_not_allowed"
    missing = await servicer.Check(request(""), None)
    assert {h.header.key: h.header.value for h in missing.ok_response.headers} == {
        "x-mtls-authz-would-deny": "missing_certificate"
    }
    value = metrics.registry.get_sample_value
    assert (
        value(
            "mtls_authz_decisions_total",
            {"decision": "audit_deny", "reason": "issuer_not_allowed", "transport": "grpc"},
        )
        == 1
    )
    assert (
        value(
            "mtls_authz_decisions_total",
            {"decision": "deny", "reason": "issuer_not_allowed", "transport": "grpc"},
        )
        == 0
    )


async def test_audit_allow_without_a_certificate_removes_the_client_sent_certificate_header() -> (
    None
):
    """The allow carries no certificate, so the client's own X-Client-Cert must not survive."""
    runtime = Runtime(
        Authorizer(
            State(TrustBundle.from_certificates([]), IssuerPolicy.from_dns([LabPki.ISSUING_DN])),
            None,
            RevocationMode.OFF,
        ),
        VerdictRules("X-Client-Cert", CertHeaderFormat.BASE64_DER, 400),
        audit=True,
    )
    servicer = make_servicer(lambda: runtime)
    for certificate in ("", "not%20a%20certificate"):
        response = await servicer.Check(request(certificate), None)
        assert response.HasField("ok_response")
        removed = list(response.ok_response.headers_to_remove)
        assert removed[0] == "x-client-cert"  # the certificate header first
        assert "x-mtls-authz-revocation" in removed


async def test_nothing_after_the_decision_escapes_check(
    pki: LabPki, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while logging or building the response is a 500 deny, never a gRPC error
    (which `failure_mode_allow: true` would turn into an allow)."""
    trust = TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert])
    metrics = Metrics(CollectorRegistry())
    servicer = make_servicer(lambda: runtime(trust), metrics)

    def broken(*args: object) -> None:
        raise RuntimeError("response building failed")

    client = envoy_field(pki.client("after").cert)
    for where in ("verdict", "rendering"):
        with monkeypatch.context() as patch:
            if where == "verdict":
                patch.setattr(VerdictRules, "verdict", broken)
            else:
                patch.setattr(grpc_check, "render", broken)
            with caplog.at_level(logging.ERROR, logger="authz.check"):
                response = await servicer.Check(request(client), None)
        assert response.denied_response.status.code == 500, where
        assert json.loads(response.denied_response.body)["error"] == "internal_error"
    assert any("response building failed" in (r.exc_text or "") for r in caplog.records)
    value = metrics.registry.get_sample_value
    assert value(
        "mtls_authz_decisions_total",
        {"decision": "deny", "reason": "internal_error", "transport": "grpc"},
    )


def with_route_policy(req: external_auth_pb2.CheckRequest, policy: str) -> None:
    route = req.attributes.route_metadata_context.filter_metadata["envoy.filters.http.lua"]
    route.update({"policy": policy})


async def test_a_verdict_cache_policy_other_than_the_context_extension_is_refused(
    pki: LabPki,
) -> None:
    trust = TrustBundle.from_certificates([pki.root.cert, pki.issuing.cert])
    servicer = make_servicer(lambda: runtime(trust))
    client = envoy_field(pki.client("mismatch").cert)
    agreed = request(client)
    with_route_policy(agreed, "default")  # no context extension: the default policy
    assert (await servicer.Check(agreed, None)).HasField("ok_response")
    for cached_as, extension in (("default", "admin"), ("admin", "")):
        req = request(client)
        with_route_policy(req, cached_as)
        if extension:
            req.attributes.context_extensions["policy"] = extension
        denied = (await servicer.Check(req, None)).denied_response
        assert denied.status.code == 500
        assert json.loads(denied.body)["error"] == "policy_mismatch"
