"""Revocation through the real Envoy, with `openssl ocsp` as the responder over an `openssl ca` index."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import LabPki
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw

MAX_AGE = 2.0


@pytest.fixture(scope="module")
def ca(pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> OpensslCa:
    return OpensslCa(tmp_path_factory.mktemp("openssl-ca"), pki.issuing)


@pytest.fixture(scope="module")
def openssl_responder(
    ca: OpensslCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpensslResponder]:
    with OpensslResponder(ca, tmp_path_factory.mktemp("ocsp") / "openssl-ocsp.log") as running:
        yield running


@pytest.fixture(scope="module")
def ocsp_stack(
    envoy: str,
    pki: LabPki,
    openssl_responder: OpensslResponder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalStack]:
    """Clients name the responder in their AIA; answers are kept MAX_AGE seconds at most."""
    args = ["--ocsp-cache-max-age", str(MAX_AGE), "--ocsp-timeout", "2"]
    with LocalStack(
        tmp_path_factory.mktemp("stack"), pki, envoy_binary=envoy, authz_args=args
    ) as running:
        yield running


def test_good_certificate_passes(
    ocsp_stack: LocalStack, pki: LabPki, ca: OpensslCa, openssl_responder: OpensslResponder
) -> None:
    client = pki.client("ossl-good", ocsp_url=openssl_responder.url)
    ca.add_valid(client)
    openssl_responder.restart()
    result = ocsp_stack.curl(client, "/good")
    assert result.status == 200
    assert result.json()["headers"]["x-mtls-authz-revocation"] == ["good"]


def test_revoked_certificate_is_refused(
    ocsp_stack: LocalStack, pki: LabPki, ca: OpensslCa, openssl_responder: OpensslResponder
) -> None:
    client = pki.client("ossl-revoked", ocsp_url=openssl_responder.url)
    ca.add_valid(client)
    ca.revoke(client, "keyCompromise")
    openssl_responder.restart()
    result = ocsp_stack.curl(client, "/revoked")
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "certificate_revoked"
    body = result.json()
    assert body["error"] == "certificate_revoked"
    assert "revoked at" in body["message"] and "keyCompromise" in body["message"]
    assert not backend_saw(ocsp_stack, "/revoked")


def test_certificate_unknown_to_the_responder_is_refused(
    ocsp_stack: LocalStack, pki: LabPki, openssl_responder: OpensslResponder
) -> None:
    client = pki.client("ossl-unknown", ocsp_url=openssl_responder.url)  # not in the index
    result = ocsp_stack.curl(client, "/unknown")
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "certificate_status_unknown"


def test_certificate_without_a_responder_is_refused(ocsp_stack: LocalStack, pki: LabPki) -> None:
    result = ocsp_stack.curl(pki.client("ossl-no-aia"), "/no-aia")
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "no_revocation_source"


def test_revocation_is_seen_once_the_cache_max_age_has_passed(
    ocsp_stack: LocalStack, pki: LabPki, ca: OpensslCa, openssl_responder: OpensslResponder
) -> None:
    client = pki.client("ossl-later", ocsp_url=openssl_responder.url)
    ca.add_valid(client)
    openssl_responder.restart()
    assert ocsp_stack.curl(client, "/before").status == 200
    cached_at = time.monotonic()

    ca.revoke(client)
    openssl_responder.restart()
    time.sleep(max(0.0, cached_at + MAX_AGE + 0.5 - time.monotonic()))
    result = ocsp_stack.curl(client, "/after")
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "certificate_revoked"


def test_responder_down_fails_closed_with_503(
    ocsp_stack: LocalStack, pki: LabPki, ca: OpensslCa, openssl_responder: OpensslResponder
) -> None:
    client = pki.client("ossl-down", ocsp_url=openssl_responder.url)
    ca.add_valid(client)
    openssl_responder.stop()
    try:
        result = ocsp_stack.curl(client, "/down")
    finally:
        openssl_responder.start()
    assert result.status == 503
    assert result.headers["x-mtls-authz-reason"] == "revocation_check_failed"
    assert int(result.headers["retry-after"]) >= 1
    assert result.json()["error"] == "revocation_check_failed"
    assert not backend_saw(ocsp_stack, "/down")


def test_responder_down_in_soft_fail_lets_the_client_in_marked_unchecked(
    envoy: str, pki: LabPki, ca: OpensslCa, openssl_responder: OpensslResponder, tmp_path: Path
) -> None:
    client = pki.client("ossl-soft", ocsp_url=openssl_responder.url)
    ca.add_valid(client)
    revoked = pki.client("ossl-soft-revoked", ocsp_url=openssl_responder.url)
    ca.revoke(revoked)
    openssl_responder.restart()
    with LocalStack(tmp_path, pki, envoy_binary=envoy, authz_args=["--ocsp", "soft-fail"]) as stack:
        assert stack.curl(revoked, "/soft-revoked").status == 400  # soft-fail is not "off"
        openssl_responder.stop()
        try:
            result = stack.curl(client, "/soft", headers=["X-Mtls-Authz-Revocation: good"])
        finally:
            openssl_responder.start()
    assert result.status == 200
    assert result.json()["headers"]["x-mtls-authz-revocation"] == ["unchecked"]
