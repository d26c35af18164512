"""Property-based tests (hypothesis) over request parsing, XFCC parsing and DN handling."""

from __future__ import annotations

import contextlib
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.core.certificate import chain_from_xfcc, decode_source_certificate, split_xfcc
from authz.core.decision import State, decide
from authz.core.issuers import IssuerPolicy
from authz.core.names import name_key, parse_dn
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.trust import TrustBundle
from authz.demo.pki import LabPki

PKI = LabPki.create()
STATE = State(
    TrustBundle.from_certificates([PKI.root.cert, PKI.issuing.cert]),
    IssuerPolicy.from_dns([LabPki.ISSUING_DN]),
)
GOOD_CERT = PKI.client("prop").cert
GOOD_PEM = GOOD_CERT.public_bytes(Encoding.PEM).decode()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like what might arrive: PEM fragments, escapes, garbage.
pemish = st.one_of(
    st.text(max_size=400),
    st.text(alphabet="%0123456789ABCDEFabcdef-/+= \n", max_size=400),
    st.builds(lambda a, b: GOOD_PEM[:a] + b, st.integers(0, len(GOOD_PEM)), st.text(max_size=40)),
)


@FAST
@given(pemish)
def test_certificate_field_parsing_only_ever_denies(field: str) -> None:
    try:
        decode_source_certificate(field)
    except Denied as denied:
        assert denied.reason in (Reason.MISSING_CERTIFICATE, Reason.MALFORMED_CERTIFICATE)


@FAST
@given(pemish, st.text(max_size=300))
def test_decide_never_raises_and_never_allows_garbage(field: str, xfcc: str) -> None:
    decision = decide(CheckInput(field, xfcc), STATE, dt.datetime.now(dt.UTC))
    assert not decision.allowed or field.strip().startswith("-----BEGIN")


@FAST
@given(st.text(max_size=500))
def test_xfcc_parsing_never_raises(header: str) -> None:
    assert isinstance(split_xfcc(header), list)
    assert isinstance(chain_from_xfcc(header, GOOD_CERT), list)


keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
plain_values = st.text(
    alphabet=st.characters(blacklist_characters='"\\,;=', blacklist_categories=("Cs",)), max_size=30
)


@FAST
@given(
    st.lists(st.dictionaries(keys, plain_values, min_size=1, max_size=4), min_size=1, max_size=5)
)
def test_xfcc_round_trip(elements: list[dict[str, str]]) -> None:
    header = ",".join(";".join(f'{k}="{v}"' for k, v in element.items()) for element in elements)
    assert split_xfcc(header) == elements


attribute_types = st.sampled_from(
    [
        NameOID.COMMON_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.LOCALITY_NAME,
    ]
)
values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
).filter(lambda v: v.strip() != "")
names = st.lists(st.tuples(attribute_types, values), min_size=1, max_size=5).map(
    lambda pairs: x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])
)


@FAST
@given(names)
def test_rfc4514_text_of_a_name_parses_back_to_the_same_name(name: x509.Name) -> None:
    assert name_key(parse_dn(name.rfc4514_string())) == name_key(name)


ascii_values = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20
)
ascii_names = st.lists(st.tuples(attribute_types, ascii_values), min_size=1, max_size=5).map(
    lambda pairs: x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])
)


@FAST
@given(ascii_names)
def test_ascii_case_and_spacing_do_not_change_a_name(name: x509.Name) -> None:
    shouted = x509.Name(
        [
            x509.NameAttribute(a.oid, "  " + str(a.value).swapcase().replace(" ", "   ") + " ")
            for a in name
        ]
    )
    assert name_key(shouted) == name_key(name)


@FAST
@given(st.text(max_size=200))
def test_dn_parsing_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_dn(text)
