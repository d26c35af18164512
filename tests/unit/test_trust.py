from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz.core.trust import TrustBundle, TrustBundleError
from authz.demo.pki import LabPki, make_ca, make_leaf, pem_bundle


def bundle(*identities: object) -> TrustBundle:
    return TrustBundle.from_certificates(i.cert for i in identities)  # type: ignore[attr-defined]


def test_issuer_in_bundle_is_found_by_signature(pki: LabPki) -> None:
    leaf = pki.client("t1")
    found = bundle(pki.root, pki.issuing, pki.other).find_issuer(leaf.cert)
    assert found == pki.issuing.cert


def test_ca_copying_an_allowed_dn_is_not_the_issuer(pki: LabPki) -> None:
    forged = pki.client("t2", pki.foreign)
    assert forged.cert.issuer == pki.issuing.cert.subject
    assert bundle(pki.root, pki.issuing).find_issuer(forged.cert) is None


def test_same_dn_different_key_without_key_identifiers_is_refused_by_signature(
    pki: LabPki,
) -> None:
    # A leaf with no AKI: only the signature can tell the two CAs apart.
    forged = pki.client("t3", pki.foreign).cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(forged.subject)
        .issuer_name(forged.issuer)
        .public_key(forged.public_key())
        .serial_number(forged.serial_number)
        .not_valid_before(forged.not_valid_before_utc)
        .not_valid_after(forged.not_valid_after_utc)
    )
    no_aki = builder.sign(pki.foreign.key, hashes.SHA256())
    assert bundle(pki.issuing).find_issuer(no_aki) is None
    genuine = builder.sign(pki.issuing.key, hashes.SHA256())
    assert bundle(pki.issuing).find_issuer(genuine) == pki.issuing.cert


def test_intermediate_offered_by_the_client_is_used_when_it_chains_to_the_bundle(
    pki: LabPki,
) -> None:
    leaf = pki.client("t4")
    roots_only = bundle(pki.root)
    assert roots_only.find_issuer(leaf.cert) is None
    assert roots_only.find_issuer(leaf.cert, [leaf.cert, pki.issuing.cert]) == pki.issuing.cert


def test_offered_intermediate_that_does_not_chain_to_the_bundle_is_ignored(pki: LabPki) -> None:
    forged = pki.client("t5", pki.foreign)
    assert bundle(pki.root).find_issuer(forged.cert, [forged.cert, pki.foreign.cert]) is None


def test_deeper_offered_chains_are_followed(pki: LabPki) -> None:
    middle = make_ca("CN=Middle,O=Lab", pki.issuing)
    leaf = make_leaf("t6", middle)
    offered = [leaf.cert, middle.cert, pki.issuing.cert]
    assert bundle(pki.root).find_issuer(leaf.cert, offered) == middle.cert


def test_an_offered_end_entity_cannot_act_as_issuer(pki: LabPki) -> None:
    # A non-CA certificate that signs another: must not be accepted as an intermediate.
    fake_ca = pki.client("fake-ca")
    victim = pki.client("t7").cert
    signed = (
        x509.CertificateBuilder()
        .subject_name(victim.subject)
        .issuer_name(fake_ca.cert.subject)
        .public_key(victim.public_key())
        .serial_number(1)
        .not_valid_before(victim.not_valid_before_utc)
        .not_valid_after(victim.not_valid_after_utc)
        .sign(fake_ca.key, hashes.SHA256())
    )
    assert bundle(pki.root, pki.issuing).find_issuer(signed, [fake_ca.cert]) is None


def test_bundle_rejects_end_entity_certificates(pki: LabPki) -> None:
    with pytest.raises(TrustBundleError, match="not a CA"):
        TrustBundle.from_pem(pem_bundle(pki.root.cert, pki.client("t8").cert))


def test_bundle_file_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(TrustBundleError, match="No such file"):
        TrustBundle.load(tmp_path / "missing.pem")
    (tmp_path / "empty.pem").write_text("nothing here")
    with pytest.raises(TrustBundleError, match="no PEM certificates"):
        TrustBundle.load(tmp_path / "empty.pem")


def test_bundle_loads_from_file(tmp_path: Path, pki: LabPki) -> None:
    path = tmp_path / "bundle.pem"
    path.write_bytes(pem_bundle(pki.root.cert, pki.issuing.cert))
    assert TrustBundle.load(path).certificates == (pki.root.cert, pki.issuing.cert)
