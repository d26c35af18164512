"""Client certificates signed with SHA-1 (`openssl ca -md sha1`), as legacy PKIs still issue them:
refused as `weak_signature_algorithm` by default, accepted with `allow_sha1_signatures` (verified
with the CA's key, revocation still checked), through the real Envoy; `check` reports their OCSP
status as `openssl ocsp` does and names the algorithm."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.demo.openssl_ocsp import OpensslCa, OpensslResponder
from authz.demo.pki import Identity, LabPki
from authz.demo.processes import Process, free_port, http_ok
from authz.demo.stack import LocalStack
from tests.e2e.conftest import backend_saw

# A legacy client: OpenSSL 3 refuses to load a SHA-1-signed certificate of its own at the default
# security level ("ca md too weak"); clients of such PKIs run at level 0.
LEGACY_CLIENT = """\
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
CipherString = DEFAULT@SECLEVEL=0
"""


@dataclass
class LegacyPki:
    good: Identity
    revoked: Identity
    modern: Identity
    foreign: Identity
    """SHA-1, from the CA that copies the issuing CA's name with another key."""
    workdir: Path
    sha1_answers: Identity
    """SHA-256-signed, asking a responder that signs its answers with SHA-1 (`-rmd sha1`)."""
    sha1_responder: Identity
    """SHA-256-signed, asking a responder whose certificate the CA signed with SHA-1."""
    sha1_crl: Identity
    """SHA-256-signed, no OCSP, its distribution point a CRL signed with SHA-1."""

    @property
    def client_env(self) -> dict[str, str]:
        config = self.workdir / "legacy-client.cnf"
        config.write_text(LEGACY_CLIENT)
        return {"OPENSSL_CONF": str(config)}


@pytest.fixture(scope="module")
def legacy(pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyPki]:
    workdir = tmp_path_factory.mktemp("sha1")
    ca = OpensslCa(workdir / "ca", pki.issuing)
    weak_signer = ca.issue("SHA1 OCSP Responder", md="sha1", usage="OCSPSigning")
    site = workdir / "site"
    site.mkdir()
    port = free_port()
    crl_url = f"http://127.0.0.1:{port}/sha1.crl"
    with (
        OpensslResponder(ca, workdir / "ocsp.log") as responder,
        OpensslResponder(ca, workdir / "ocsp-sha1.log", md="sha1") as weak_answers,
        OpensslResponder(ca, workdir / "ocsp-signer.log", signer=weak_signer) as weak_responder,
        Process(
            "crl server",
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
            workdir / "http.log",
        ) as crl_server,
    ):  # fmt: skip
        url = responder.url
        good = ca.issue("sha1-good", md="sha1", ocsp_url=url)
        revoked = ca.issue("sha1-revoked", md="sha1", ocsp_url=url)
        modern = ca.issue("sha256-good", ocsp_url=url)
        foreign = OpensslCa(workdir / "foreign", pki.foreign).issue("sha1-foreign", md="sha1")
        sha1_answers = ca.issue("asks-sha1-answers", ocsp_url=weak_answers.url)
        sha1_responder = ca.issue("asks-sha1-responder", ocsp_url=weak_responder.url)
        sha1_crl = ca.issue("names-sha1-crl", crl_url=crl_url)
        ca.revoke(revoked)
        ca.gencrl(site / "sha1.crl", md="sha1")
        for running in (responder, weak_answers, weak_responder):
            running.restart()
        crl_server.wait_until(lambda: http_ok(crl_url), 30, "serving")
        yield LegacyPki(
            good, revoked, modern, foreign, workdir, sha1_answers, sha1_responder, sha1_crl
        )


def _stack(envoy: str, pki: LabPki, workdir: Path, *args: str) -> LocalStack:
    return LocalStack(
        workdir, pki, envoy_binary=envoy, envoy_trusted=(pki.root, pki.foreign_root),
        authz_args=["--revocation", "ocsp-then-crl", *args],
    )  # fmt: skip


@pytest.fixture(scope="module")
def strict(
    envoy: str, pki: LabPki, legacy: LegacyPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with _stack(envoy, pki, tmp_path_factory.mktemp("strict")) as running:
        yield running


@pytest.fixture(scope="module")
def allowing(
    envoy: str, pki: LabPki, legacy: LegacyPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with _stack(envoy, pki, tmp_path_factory.mktemp("allowing"), "--allow-sha1-signatures") as s:
        yield s


def test_the_certificates_are_sha1_signed_by_the_openssl_cli(legacy: LegacyPki) -> None:
    assert legacy.good.cert.signature_hash_algorithm is not None
    assert legacy.good.cert.signature_hash_algorithm.name == "sha1"
    assert legacy.modern.cert.signature_hash_algorithm.name == "sha256"  # type: ignore[union-attr]


def test_by_default_envoy_lets_the_handshake_through_and_mtls_authz_names_the_weak_signature(
    strict: LocalStack, legacy: LegacyPki
) -> None:
    """Envoy's TLS accepts a SHA-1-signed client certificate (the request reaches ext_authz);
    mtls-authz refuses it with the honest reason, not `issuer_unknown`."""
    result = strict.curl(legacy.good, "/sha1/strict", env=legacy.client_env)
    assert result.status == 400
    assert result.headers["x-mtls-authz-reason"] == "weak_signature_algorithm"
    assert b"ecdsa-with-SHA1" in result.body and b"CN=Lab Issuing CA,O=Lab" in result.body
    assert not backend_saw(strict, "/sha1/strict")
    assert strict.curl(legacy.modern, "/sha256/strict", env=legacy.client_env).status == 200


def test_allowed_a_sha1_leaf_is_verified_with_the_cas_key_and_still_checked_for_revocation(
    allowing: LocalStack, legacy: LegacyPki
) -> None:
    result = allowing.curl(legacy.good, "/sha1/good", env=legacy.client_env)
    assert result.status == 200
    assert result.json()["headers"]["x-mtls-authz-revocation"] == ["good"]
    revoked = allowing.curl(legacy.revoked, "/sha1/revoked", env=legacy.client_env)
    assert revoked.status == 400
    assert revoked.headers["x-mtls-authz-reason"] == "certificate_revoked"
    # Nothing else relaxed: the same DN with another key signed nothing the bundle trusts.
    foreign = allowing.curl(legacy.foreign, "/sha1/foreign", env=legacy.client_env)
    assert foreign.status == 400
    assert foreign.headers["x-mtls-authz-reason"] == "issuer_unknown"
    assert not backend_saw(allowing, "/sha1/foreign")


def test_the_foreign_sha1_certificate_is_issuer_unknown_without_the_setting_too(
    strict: LocalStack, legacy: LegacyPki
) -> None:
    result = strict.curl(legacy.foreign, "/sha1/foreign-strict", env=legacy.client_env)
    assert result.headers["x-mtls-authz-reason"] == "issuer_unknown"


def _check(
    legacy: LegacyPki, pki: LabPki, client: Identity, name: str, *flags: str
) -> tuple[int, str]:
    cert = legacy.workdir / f"{name}.pem"
    cert.write_bytes(client.cert_pem)
    issuer = legacy.workdir / "issuer.pem"
    issuer.write_bytes(pki.issuing.cert_pem)
    done = subprocess.run(
        [sys.executable, "-m", "authz", "check", str(cert), "--issuer", str(issuer), *flags],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_check_reports_the_ocsp_status_of_a_sha1_certificate_and_names_the_algorithm(
    legacy: LegacyPki, pki: LabPki
) -> None:
    """`check` applies the service's one SHA-1 rule: without --allow-sha1-signatures a SHA-1
    certificate gets its status printed and exit 4 (weak_signature_algorithm); with it, the
    status's own exit code."""
    code, out = _check(legacy, pki, legacy.good, "check-good")
    assert code == 4 and ": good" in out, out
    assert "weak_signature_algorithm: The certificate is signed with ecdsa-with-SHA1" in out
    code, out = _check(legacy, pki, legacy.good, "check-good", "--allow-sha1-signatures")
    assert code == 0 and "Signature: ecdsa-with-SHA1 (SHA-1, allowed)" in out, out
    code, out = _check(legacy, pki, legacy.revoked, "check-revoked", "--allow-sha1-signatures")
    assert code == 1 and ": revoked" in out, out
    code, out = _check(legacy, pki, legacy.modern, "check-modern")
    assert code == 0 and "Signature:" not in out
    # The foreign CA's certificate: the issuer's key does not verify it, and the message says
    # which signature it tried.
    code, out = _check(legacy, pki, legacy.foreign, "check-foreign")
    assert code == 3 and "does not verify the certificate's ecdsa-with-SHA1 signature" in out


@pytest.mark.parametrize(
    ("client", "says"),
    [
        ("sha1_answers", "the OCSP response is signed with SHA-1"),
        ("sha1_responder", "the delegated responder certificate CN=SHA1 OCSP Responder is signed"),
        ("sha1_crl", "the CRL is signed with SHA-1"),
    ],
)
def test_a_sha1_answer_is_refused_saying_which_signature_unless_allowed(
    strict: LocalStack, allowing: LocalStack, legacy: LegacyPki, pki: LabPki, client: str,
    says: str,
) -> None:  # fmt: skip
    """The client's own certificate is SHA-256; what vouches for its status is signed with
    SHA-1: refused under the same rule, naming the object, never as a bad or unauthorized
    signature; accepted and verified with the setting."""
    identity: Identity = getattr(legacy, client)
    refused = strict.curl(identity, f"/sha1/{client}")
    assert refused.status == 503, refused.body
    assert refused.json()["error"] == "revocation_check_failed"
    assert "(weak_signature_algorithm: " in refused.json()["message"]
    assert says in refused.json()["message"]
    assert allowing.curl(identity, f"/sha1/{client}/allowed").status == 200
    code, out = _check(legacy, pki, identity, f"check-{client}")
    if client != "sha1_crl":  # check asks OCSP only
        assert code == 4 and says in out, out
        code, out = _check(legacy, pki, identity, f"check-{client}", "--allow-sha1-signatures")
        assert code == 0 and ": good" in out, out
