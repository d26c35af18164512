from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from authz.core.names import name_key, normalise_value, parse_dn


def key(dn: str) -> object:
    return name_key(parse_dn(dn))


def test_rfc4514_and_slash_forms_name_the_same_issuer() -> None:
    assert key("CN=Lab Issuing CA,O=Lab") == key("/O=Lab/CN=Lab Issuing CA")


def test_rfc4514_is_written_most_specific_first_so_rdn_order_follows_the_certificate() -> None:
    name = parse_dn("CN=Lab Issuing CA,O=Lab")
    assert [rdn.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) != [] for rdn in name.rdns] == [
        True,
        False,
    ]


def test_rdn_order_matters() -> None:
    assert key("CN=A,O=Lab") != key("O=Lab,CN=A")


def test_attribute_types_are_case_insensitive() -> None:
    assert key("cn=Lab Issuing CA,o=Lab") == key("CN=Lab Issuing CA,O=Lab")
    assert key("/o=Lab/Cn=Lab Issuing CA") == key("CN=Lab Issuing CA,O=Lab")


def test_values_compare_case_insensitively_with_whitespace_folded() -> None:
    assert key("CN=lab   ISSUING ca,O=LAB") == key("CN=Lab Issuing CA,O=Lab")
    assert key("/O=LAB/CN=  lab \t issuing CA ") == key("CN=Lab Issuing CA,O=Lab")


def test_different_values_differ() -> None:
    assert key("CN=Lab Issuing CA 2,O=Lab") != key("CN=Lab Issuing CA,O=Lab")


def test_compatibility_forms_are_not_folded_into_ascii() -> None:
    """A full-width `ＴENANT` or a ligature is not the ASCII name an operator allowed."""
    assert key("CN=ＴENANT,O=Lab") != key("CN=TENANT,O=Lab")
    assert normalise_value("ＬＡＢ") != normalise_value("lab")
    assert normalise_value("ﬁnance") != normalise_value("finance")


def test_unicode_values_are_compared_composed_and_case_insensitive() -> None:
    assert normalise_value("Soci\u0065\u0301t\u00e9") == normalise_value("SOCIÉTÉ")


def test_multi_valued_rdn_is_a_set() -> None:
    assert key("CN=A+OU=Ops,O=Lab") == key("OU=Ops+CN=A,O=Lab")
    assert key("/O=Lab/OU=Ops+CN=A") == key("CN=A+OU=Ops,O=Lab")


def test_escaped_separators_in_values() -> None:
    assert key(r"CN=Lab\, Inc.,O=Lab") == key(r"/O=Lab/CN=Lab, Inc.")
    assert key(r"/O=Lab/CN=A\/B") == key("CN=A/B,O=Lab")


def test_email_and_dotted_oid_types() -> None:
    assert key("emailAddress=ca@lab.test,CN=X") == key("/CN=X/E=ca@lab.test")
    assert key("2.5.4.3=X") == key("CN=X")


def test_matches_the_name_in_a_certificate() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Lab Issuing CA"),
        ]
    )
    assert name_key(name) == key("CN=Lab Issuing CA,O=Lab,C=DE")
    assert name_key(name) == key("/C=DE/O=Lab/CN=Lab Issuing CA")


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "CN", "XX=Lab", "/CN", "/FOO=bar", "CN=A,,O=B", "=value"],
)
def test_bad_dns_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_dn(bad)


def test_an_escaped_trailing_space_is_kept() -> None:
    # Found by the property test: stripping whitespace must not eat an escaped space.
    assert key("CN=0\\ ") == name_key(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "0 ")]))
