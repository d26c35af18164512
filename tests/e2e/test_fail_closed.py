"""Fail closed through the real Envoy, even with `failure_mode_allow: true`: a certificate
cryptography cannot fully decode is decided on, never turned into an error Envoy lets through."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz.demo.envoy_config import SHIPPED_ENVOY_DIR
from authz.demo.pki import LabPki
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw
from tests.ocsp_responder import OcspResponder
from tests.support import edited_template, http_filter, teletex_client


@pytest.fixture(scope="module")
def failing_open(
    envoy: str, pki: LabPki, responder: OcspResponder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """The shipped gateway, but told to let requests through when mtls-authz errs."""
    workdir = tmp_path_factory.mktemp("fail-open")

    def fail_open(config: dict[str, object]) -> None:
        http_filter(config, "envoy.filters.http.ext_authz")["failure_mode_allow"] = True  # type: ignore[arg-type]

    template = edited_template(SHIPPED_ENVOY_DIR / "envoy.yaml", workdir / "open.yaml", fail_open)
    with LocalStack(
        workdir, pki, envoy_binary=envoy, envoy_template=template, ocsp_override=responder.url,
        authz_args=["--identity-header", "subject", "--identity-header", "issuer"],
    ) as running:  # fmt: skip
        yield running


def test_an_undecodable_subject_from_a_refused_ca_is_refused_not_let_through(
    failing_open: LocalStack, pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    legacy = teletex_client(pki.other, tmp_path_factory.mktemp("legacy-other"))
    with pytest.raises(ValueError):
        legacy.cert.subject  # noqa: B018 - what made Check raise before
    result = failing_open.curl(legacy, "/legacy-other", headers=["X-Client-Cert: forged"])
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "issuer_not_allowed"
    assert not backend_saw(failing_open, "/legacy-other")


def test_an_undecodable_subject_from_the_allowed_ca_is_forwarded_as_itself(
    failing_open: LocalStack, pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    legacy = teletex_client(pki.issuing, tmp_path_factory.mktemp("legacy-good"))
    result = failing_open.curl(legacy, "/legacy-good", headers=["X-Client-Cert: forged"])
    assert result.status == 200
    seen = result.json()["headers"]
    assert seen["x-client-cert"] == [
        base64.b64encode(legacy.cert.public_bytes(Encoding.DER)).decode()
    ]
    # The subject as the hex of its DER: the Latin-1 bytes of "Société" are there, escaped.
    subject = seen["x-client-cert-subject"][0]
    assert subject.startswith("#30") and "536f6369e974e9" in subject
    assert seen["x-client-cert-issuer"] == ["CN=Lab Issuing CA,O=Lab"]
    assert "Traceback" not in (failing_open.workdir / "authz.log").read_text()
