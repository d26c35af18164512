"""The quick try's OCSP responder: its answers pass mtls-authz's own verification, say what
revoked.txt says, and refuse what is not theirs to answer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.x509 import ocsp

from authz.core.revocation import CertStatus
from authz.demo.ocsp_responder import DemoResponder, format_revoked, parse_revoked
from authz.demo.pki import LabPki, make_ocsp_signer
from authz.revocation.ocsp import build_query, build_query_by_hash, verify_response

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def setup(pki: LabPki) -> tuple[DemoResponder, LabPki]:
    revoked = pki.client("to-revoke")
    signer = make_ocsp_signer(pki.issuing)
    responder = DemoResponder(pki.issuing.cert, signer, {revoked.cert.serial_number: NOW})
    return responder, pki


def status_of(
    responder: DemoResponder, pki: LabPki, serial_cert_name: str, **kw: object
) -> CertStatus:
    client = pki.client(serial_cert_name)
    query = build_query(client.cert, pki.issuing.cert, **kw)  # type: ignore[arg-type]
    der = responder.answer(query.der, NOW)
    return verify_response(der, query, pki.issuing.cert, NOW).status


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
@pytest.mark.parametrize("nonce", [False, True])
def test_a_serial_not_listed_is_good_and_verifies(
    setup: tuple[DemoResponder, LabPki], hash_name: str, nonce: bool
) -> None:
    responder, pki = setup
    assert (
        status_of(responder, pki, "good", hash_name=hash_name, with_nonce=nonce) == CertStatus.GOOD
    )


def test_a_listed_serial_is_revoked_at_its_time(setup: tuple[DemoResponder, LabPki]) -> None:
    responder, pki = setup
    (serial,) = responder.revoked
    issuer_id = build_query(responder.signer.cert, pki.issuing.cert).cert_id
    by_serial = build_query_by_hash(issuer_id, serial)
    status = verify_response(responder.answer(by_serial.der, NOW), by_serial, pki.issuing.cert, NOW)
    assert status.status == CertStatus.REVOKED
    assert status.revocation_time == NOW


def test_another_cas_certificate_is_unauthorized(setup: tuple[DemoResponder, LabPki]) -> None:
    responder, pki = setup
    other = pki.client("elsewhere", pki.other)
    query = build_query(other.cert, pki.other.cert)
    answer = ocsp.load_der_ocsp_response(responder.answer(query.der, NOW))
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_garbage_is_a_malformed_request(setup: tuple[DemoResponder, LabPki]) -> None:
    responder, _ = setup
    answer = ocsp.load_der_ocsp_response(responder.answer(b"\x30\x03garbage", NOW))
    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_revoked_txt_round_trips_and_names_a_bad_line() -> None:
    revoked = {0xABC: NOW, 0x1: NOW - dt.timedelta(days=1)}
    assert parse_revoked(format_revoked(revoked)) == revoked
    assert parse_revoked("# nothing\n\nff 2026-01-01T00:00:00Z  # one\n") == {
        0xFF: dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    }
    with pytest.raises(ValueError, match="line 2"):
        parse_revoked("ff 2026-01-01T00:00:00\nabc\n")


def test_it_loads_the_secrets_files(setup: tuple[DemoResponder, LabPki], tmp_path: Path) -> None:
    responder, pki = setup
    (tmp_path / "issuer.pem").write_bytes(pki.issuing.cert_pem)
    (tmp_path / "signer.pem").write_bytes(responder.signer.cert_pem)
    (tmp_path / "signer.key").write_bytes(responder.signer.key_pem)
    (tmp_path / "revoked.txt").write_text(format_revoked(responder.revoked))
    loaded = DemoResponder.load(tmp_path)
    assert (loaded.issuer, loaded.signer.cert, loaded.revoked) == (
        responder.issuer, responder.signer.cert, responder.revoked,
    )  # fmt: skip
    assert loaded.signer.key_pem == responder.signer.key_pem
