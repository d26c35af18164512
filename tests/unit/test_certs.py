from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authz.core.certificate import (
    MAX_CERTIFICATE_FIELD_CHARS,
    chain_from_xfcc,
    decode_source_certificate,
    split_xfcc,
)
from authz.core.reasons import Denied, Reason
from authz.demo.pki import LabPki
from tests.support import envoy_escape, envoy_field, xfcc_with_chain


def denied_reason(field: str) -> Reason:
    with pytest.raises(Denied) as info:
        decode_source_certificate(field)
    return info.value.reason


def test_envoy_escaped_pem_decodes_to_the_same_certificate(pki: LabPki) -> None:
    leaf = pki.client("c1")
    assert decode_source_certificate(envoy_field(leaf.cert)) == leaf.cert


def test_plain_pem_is_accepted(pki: LabPki) -> None:
    leaf = pki.client("c2")
    assert decode_source_certificate(leaf.cert_pem.decode()) == leaf.cert


@pytest.mark.parametrize("field", ["", "   ", "\n"])
def test_empty_field_means_no_certificate(field: str) -> None:
    assert denied_reason(field) is Reason.MISSING_CERTIFICATE


@pytest.mark.parametrize(
    "field",
    [
        "garbage",
        "%ZZ%ZZ",
        envoy_escape("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        envoy_escape("-----BEGIN CERTIFICATE-----\nMIIB"),  # truncated
        "%FF%FE",  # not UTF-8 once decoded
        "-----BEGIN CERTIFICATE-----\n\u00e9\n-----END CERTIFICATE-----\n",
    ],
)
def test_garbage_is_malformed(field: str) -> None:
    assert denied_reason(field) is Reason.MALFORMED_CERTIFICATE


def test_a_private_key_is_malformed(pki: LabPki) -> None:
    assert denied_reason(envoy_escape(pki.client("k").key_pem.decode())) is (
        Reason.MALFORMED_CERTIFICATE
    )


def test_several_certificates_in_the_field_are_malformed(pki: LabPki) -> None:
    leaf = pki.client("c3")
    assert denied_reason(envoy_escape(leaf.chain_pem.decode())) is Reason.MALFORMED_CERTIFICATE


def test_oversized_field_is_malformed_without_parsing(pki: LabPki) -> None:
    field = envoy_field(pki.client("c4").cert) + "A" * MAX_CERTIFICATE_FIELD_CHARS
    assert denied_reason(field) is Reason.MALFORMED_CERTIFICATE


def test_xfcc_chain_gives_every_certificate_leaf_first(pki: LabPki) -> None:
    leaf = pki.client("c5")
    chain = chain_from_xfcc(xfcc_with_chain([leaf.cert, pki.issuing.cert]), leaf.cert)
    assert chain == [leaf.cert, pki.issuing.cert]


def test_xfcc_uses_the_element_whose_hash_is_the_leaf(pki: LabPki) -> None:
    leaf = pki.client("c6")
    upstream = xfcc_with_chain([pki.client("someone-else").cert, pki.other.cert])
    own = xfcc_with_chain([leaf.cert, pki.issuing.cert])
    assert chain_from_xfcc(f"{upstream},{own}", leaf.cert) == [leaf.cert, pki.issuing.cert]
    assert chain_from_xfcc(f"{own},{upstream}", leaf.cert) == [leaf.cert, pki.issuing.cert]


def test_an_unquoted_comma_in_a_san_cannot_inject_a_chain(pki: LabPki) -> None:
    # Envoy writes SANs unquoted after Chain: "DNS=x,Chain=..." would start a new element.
    leaf, forged = pki.client("c6b"), pki.client("forged-leaf")
    injected = ',Chain="' + envoy_escape(pki.foreign.cert_pem.decode()) + '"'
    header = xfcc_with_chain([leaf.cert, pki.issuing.cert], tail=";DNS=x" + injected)
    assert chain_from_xfcc(header, leaf.cert) == [leaf.cert, pki.issuing.cert]
    # A chain that does not start with the leaf is not this client's.
    assert chain_from_xfcc(xfcc_with_chain([forged.cert, pki.foreign.cert]), leaf.cert) == []


def test_xfcc_keys_are_case_insensitive_and_quotes_protect_separators() -> None:
    elements = split_xfcc('By=spiffe://a;SUBJECT="CN=x,O=y;z";URI=')
    assert elements == [{"by": "spiffe://a", "subject": "CN=x,O=y;z", "uri": ""}]


def test_xfcc_escaped_quote_inside_value() -> None:
    assert split_xfcc(r'Subject="CN=a\"b"') == [{"subject": 'CN=a"b'}]


@pytest.mark.parametrize(
    "header",
    ['Chain="unterminated', "Chain=notpem", "", "Chain=" + "A" * 300_000, 'Hash=1;Chain=""'],
)
def test_bad_xfcc_offers_no_certificates(header: str, pki: LabPki) -> None:
    assert chain_from_xfcc(header, pki.client("bad-xfcc").cert) == []


def test_xfcc_der_order_is_preserved(pki: LabPki) -> None:
    leaf = pki.client("c7")
    got = chain_from_xfcc(xfcc_with_chain([leaf.cert]), leaf.cert)
    assert got[0].public_bytes(Encoding.DER) == leaf.cert.public_bytes(Encoding.DER)
