"""`mtls-authz check` against the project's test responder, and with saved responses."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from pathlib import Path

import pytest

from authz.cli import main
from authz.core.revocation import CertStatus
from authz.demo.pki import Identity, LabPki, make_ocsp_signer, pem_bundle
from tests.ocsp_responder import OcspResponder, build_response


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check", *argv])
    return code, capsys.readouterr().out


@pytest.fixture
def good(pki: LabPki, responder: OcspResponder) -> Identity:
    return pki.client("check-good", ocsp_url=responder.url)


def test_good_with_issuer_file(
    good: Identity, pki: LabPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = write(tmp_path, "c.pem", good.cert_pem)
    issuer = write(tmp_path, "i.pem", pki.issuing.cert_pem)
    code, out = run([cert, "--issuer", issuer], capsys)
    assert code == 0
    assert f"{cert}: good" in out and "This Update:" in out and "Next Update:" in out


def test_revoked_with_trust_bundle(
    pki: LabPki, responder: OcspResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    revoked = pki.client("check-revoked", ocsp_url=responder.url)
    responder.revoke(revoked.cert.serial_number)
    cert = write(tmp_path, "c.pem", revoked.chain_pem)
    bundle = write(tmp_path, "b.pem", pem_bundle(pki.root.cert))
    code, out = run([cert, "--trust-bundle", bundle], capsys)
    assert code == 1
    assert ": revoked" in out and "Revocation Time:" in out


def test_unknown(
    pki: LabPki, responder: OcspResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaf = pki.client("check-unknown", ocsp_url=responder.url)
    responder.statuses[leaf.cert.serial_number] = (CertStatus.UNKNOWN, None)
    code, out = run([write(tmp_path, "c.pem", leaf.chain_pem)], capsys)
    assert code == 2 and ": unknown" in out


def test_issuer_file_that_is_not_the_issuer_is_refused(
    good: Identity, pki: LabPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = write(tmp_path, "c.pem", good.cert_pem)
    code, out = run([cert, "--issuer", write(tmp_path, "o.pem", pki.other.cert_pem)], capsys)
    assert code == 3 and "is not the certificate's issuer" in out
    # Same DN, different key: the foreign CA copying the issuer's name.
    code, out = run([cert, "--issuer", write(tmp_path, "f.pem", pki.foreign.cert_pem)], capsys)
    assert code == 3 and "does not verify" in out


def test_respin_der_and_base64_and_at(
    good: Identity, pki: LabPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    then = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    der = build_response((good.cert, pki.issuing.cert), pki.issuing, this_update=then)
    cert = write(tmp_path, "c.pem", good.chain_pem)
    saved = write(tmp_path, "r.der", der)
    code, out = run([cert, "--respin", saved], capsys)
    assert code == 3 and "stale" in out  # a 2024 answer is not fresh now
    code, out = run([cert, "--respin", saved, "--at", "2024-05-01T12:30:00Z"], capsys)
    assert code == 0 and f"Responder: {saved}" in out
    b64 = write(tmp_path, "r.b64", base64.b64encode(der) + b"\n")
    assert run([cert, "--respin", b64, "--at", "2024-05-01T12:30:00"], capsys)[0] == 0


def test_no_responder_known(
    pki: LabPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = write(tmp_path, "c.pem", pki.client("no-aia").chain_pem)
    code, out = run([cert], capsys)
    assert code == 3 and "give --url" in out


def test_url_flag_overrides_aia(
    pki: LabPki, responder: OcspResponder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = write(tmp_path, "c.pem", pki.client("url", ocsp_url="http://127.0.0.1:9/").chain_pem)
    code, out = run([cert, "--url", responder.url], capsys)
    assert code == 0 and f"Responder: {responder.url}" in out


def test_an_issuer_name_that_cannot_be_decoded_is_said_not_raised(
    pki: LabPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A self-signed certificate whose names are Latin-1 bytes in a TeletexString (openssl CLI)."""
    (tmp_path / "req.cnf").write_text(
        "[req]\ndistinguished_name = dn\nstring_mask = default\nprompt = no\n[dn]\n"
    )
    key = write(tmp_path, "k.pem", pki.client("unused").key_pem)
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-utf8", "-config", str(tmp_path / "req.cnf"),
         "-key", key, "-subj", "/CN=Société", "-days", "1", "-out", str(tmp_path / "t61.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    cert = str(tmp_path / "t61.pem")
    for argv in (
        ["--issuer", cert],
        ["--trust-bundle", write(tmp_path, "b.pem", pki.root.cert_pem)],
    ):
        code, out = run([cert, *argv], capsys)
        assert code == 3 and "cannot be decoded" in out and "536f6369e974e9" in out


def test_at_a_time_the_answer_is_not_valid_says_so_not_that_the_signer_is_not(
    good: Identity, pki: LabPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A delegated signer's certificate is usually valid for about the answer's own period: at a
    time outside it the answer's window is what is wrong, and what is said."""
    der = build_response((good.cert, pki.issuing.cert), make_ocsp_signer(pki.issuing))
    cert = write(tmp_path, "c.pem", good.chain_pem)
    saved = write(tmp_path, "r.der", der)
    assert run([cert, "--respin", saved], capsys)[0] == 0
    code, out = run([cert, "--respin", saved, "--at", "2020-01-01T00:00:00Z"], capsys)
    assert code == 3 and "is in the future" in out and "signing certificate" not in out
    code, out = run([cert, "--respin", saved, "--at", "2100-01-01T00:00:00Z"], capsys)
    assert code == 3 and "the answer expired at" in out and "signing certificate" not in out
