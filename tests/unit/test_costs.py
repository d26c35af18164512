"""What a client can make the service spend: every cost is capped before parsing, and what was
parsed is remembered by digest so a large header costs once, and memory stays bounded."""

from __future__ import annotations

import datetime as dt

import pytest

from authz.client_cert import xfcc as xfcc_source
from authz.client_cert.xfcc import XfccCertificate, XfccElement
from authz.core import certificate, decision
from authz.core.certificate import MAX_CHAIN_CERTIFICATES, MAX_XFCC_CHARS, chain_from_xfcc
from authz.core.decision import State, decide
from authz.core.issuers import IssuerPolicy
from authz.core.memo import SizedMemo, text_key
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.trust import TrustBundle
from authz.demo.pki import LabPki
from tests.support import envoy_field, envoy_xfcc_element, xfcc_with_chain

NOW = dt.datetime.now(dt.UTC)
PADDING = 150  # certificates a client adds to its TLS chain; Envoy copies them all into XFCC


@pytest.fixture(scope="module")
def padded(pki: LabPki) -> tuple[LabPki, str, str]:
    """A client whose chain is its leaf, its issuer, then 150 copies of another CA (~100 KB)."""
    client = pki.client("padded")
    chain = [client.cert, pki.issuing.cert, *[pki.other.cert] * PADDING]
    header = xfcc_with_chain(chain)
    assert len(header) > 16 * 1024 * 6
    return pki, envoy_field(client.cert), header


def counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many certificates each PEM parse of the client's chain was handed."""
    handed: list[int] = []
    real = certificate._load_pem_certificates

    def load(pem: str) -> object:
        handed.append(pem.count("-----BEGIN CERTIFICATE-----"))
        return real(pem)

    monkeypatch.setattr(certificate, "_load_pem_certificates", load)
    return handed


def test_a_padded_chain_is_cut_before_it_is_parsed(
    padded: tuple[LabPki, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pki, field, header = padded
    leaf = certificate.decode_source_certificate(field)
    handed = counting_parses(monkeypatch)
    chain = chain_from_xfcc(header, leaf)
    assert len(chain) == MAX_CHAIN_CERTIFICATES and chain[1] == pki.issuing.cert
    assert handed == [MAX_CHAIN_CERTIFICATES]


def test_a_large_header_is_verified_once_then_remembered_by_digest(
    padded: tuple[LabPki, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the root in the bundle the issuer comes from the client's chain: worked out on
    the first request, remembered for the next however large the header."""
    pki, field, header = padded
    state = State(
        TrustBundle.from_certificates([pki.root.cert]), IssuerPolicy.from_dns([LabPki.ISSUING_DN])
    )
    calls: list[str] = []
    real = decision.chain_from_xfcc
    monkeypatch.setattr(
        decision, "chain_from_xfcc", lambda h, leaf: calls.append(h) or real(h, leaf)
    )
    for _ in range(5):
        assert decide(CheckInput(field, header), state, NOW).allowed
    assert len(calls) == 1
    # Remembered by digest: the memo keeps a few bytes of the header, not the header.
    assert text_key(header) != header and len(text_key(header)) == 20


def test_refused_oversized_headers_are_not_remembered() -> None:
    memo = xfcc_source._PARSED[XfccElement.FIRST]
    before = len(memo), memo.size
    source = XfccCertificate()
    for n in range(50):
        with pytest.raises(Denied) as info:
            source.present(CheckInput("", f"x{n}" + "A" * MAX_XFCC_CHARS))
        assert info.value.reason is Reason.XFCC_INVALID
    assert (len(memo), memo.size) == before


def test_the_xfcc_memo_is_bounded_by_what_it_holds(
    pki: LabPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many distinct large headers (a client can vary its chain per connection) cost at most the
    memo's byte bound."""
    bound = 200_000
    memo: SizedMemo[object] = SizedMemo(bound)
    monkeypatch.setitem(xfcc_source._PARSED, XfccElement.FIRST, memo)
    client = pki.client("varies")
    source = XfccCertificate()
    for n in range(60):
        header = envoy_xfcc_element(client.cert, [pki.issuing.cert] * (n % 7 + 1)) + f";x={n}"
        assert source.leaf(source.present(CheckInput("", header))) == client.cert
        assert memo.size <= bound
    assert 0 < len(memo) < 60


def test_sized_memo_evicts_the_least_recently_used() -> None:
    memo: SizedMemo[str] = SizedMemo(10)
    memo.put("a", "A", 4)
    memo.put("b", "B", 4)
    assert memo.get("a") == "A"
    memo.put("c", "C", 4)  # over the bound: b, the least recently used, goes
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == ("A", None, "C")
    memo.put("big", "X", 11)  # larger than the whole memo: never kept
    assert memo.get("big") is None and memo.size == 8
