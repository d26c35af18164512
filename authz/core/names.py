"""Distinguished names: parse the forms operators write, and compare them as RFC 5280 does.

Two names are equal when they have the same RDNs in the same order (the certificate's order),
each RDN the same set of attribute types, and each value equal ignoring case and runs of
whitespace (outer space removed, inner runs made one space), after canonical composition (NFC).

Stricter than RFC 4518's NFKC on purpose: compatibility forms are distinct characters, so a
full-width `ＴENANT` or a ligature is not the ASCII name an operator allowed. Real CAs write their
names in ASCII or in composed UTF-8, where both readings agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping

from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier

# One attribute after normalisation: (dotted OID, normalised value).
NormalisedAttribute = tuple[str, str]
# A whole name after normalisation: one frozenset per RDN, in the certificate's order.
NameKey = tuple[frozenset[NormalisedAttribute], ...]

# Attribute type names accepted in configuration, upper-cased. Covers RFC 4514's table and the
# names OpenSSL prints (`openssl x509 -subject`), so a DN copied from either works.
_TYPE_NAMES: dict[str, ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "E": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "SN": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "POSTALCODE": NameOID.POSTAL_CODE,
    "DNQUALIFIER": NameOID.DN_QUALIFIER,
    "PSEUDONYM": NameOID.PSEUDONYM,
    "ORGANIZATIONIDENTIFIER": NameOID.ORGANIZATION_IDENTIFIER,
    "BUSINESSCATEGORY": NameOID.BUSINESS_CATEGORY,
}

_SPACES = re.compile(r"\s+")
_DOTTED_OID = re.compile(r"^\d+(\.\d+)+$")


class _CaseInsensitiveTypes(Mapping[str, ObjectIdentifier]):
    """Lets cryptography's RFC 4514 parser accept `cn=` and `emailAddress=` as well as `CN=`."""

    def __getitem__(self, name: str) -> ObjectIdentifier:
        return _TYPE_NAMES[name.upper()]

    def __iter__(self) -> Iterator[str]:
        return iter(_TYPE_NAMES)

    def __len__(self) -> int:
        return len(_TYPE_NAMES)


_TYPES = _CaseInsensitiveTypes()


def parse_dn(text: str) -> x509.Name:
    """Parse a DN in RFC 4514 form (`CN=Issuing CA,O=Lab`) or slash form (`/O=Lab/CN=Issuing CA`).

    Raises ValueError with a readable message when the text is neither.
    """
    stripped = _strip_unescaped(text)
    if not stripped:
        raise ValueError("empty distinguished name")
    if stripped.startswith("/"):
        return _parse_slash_form(stripped)
    try:
        return x509.Name.from_rfc4514_string(stripped, _TYPES)
    except ValueError as e:
        meant = _from_openssl_output(stripped)
        if meant is not None:
            raise ValueError(
                f"not a valid RFC 4514 distinguished name: {text!r} looks like `openssl x509 "
                f"-issuer` output, which lists the RDNs in the certificate's order; in RFC 4514 "
                f"(most specific first) write {meant[0]!r}, or in slash form {meant[1]!r}"
            ) from e
        raise ValueError(f"not a valid RFC 4514 distinguished name: {text!r}") from e


_OPENSSL_RDN = re.compile(r"^\s*([A-Za-z][A-Za-z0-9.]*)\s+=\s+(.*?)\s*$")


def _from_openssl_output(text: str) -> tuple[str, str] | None:
    """`O = Lab, CN = Lab Issuing CA` (OpenSSL's default name output, certificate order) as RFC
    4514 and as slash form, when that is what it is."""
    rdns = []
    body = text.removeprefix("issuer=").removeprefix("subject=")
    for part in re.split(r"(?<!\\), ", body):
        found = _OPENSSL_RDN.match(part)
        if found is None:
            return None
        rdns.append((found.group(1), re.sub(r"\\(.)", r"\1", found.group(2))))
    rfc4514 = ",".join(f"{t}={_escape(v)}" for t, v in reversed(rdns))
    try:
        x509.Name.from_rfc4514_string(rfc4514, _TYPES)
    except ValueError:
        return None
    return rfc4514, "".join(f"/{t}={v}" for t, v in rdns)


def _escape(value: str) -> str:
    return "".join("\\" + c if c in ',+"\\<>;' else c for c in value)


def _strip_unescaped(text: str) -> str:
    """Strip surrounding whitespace, but keep a trailing space that a backslash escapes."""
    lead = len(text) - len(text.lstrip())
    stripped = text.strip()
    backslashes = len(stripped) - len(stripped.rstrip("\\"))
    end = lead + len(stripped)
    if backslashes % 2 == 1 and end < len(text):
        return stripped + text[end]
    return stripped


def _parse_slash_form(text: str) -> x509.Name:
    """OpenSSL's `-subj` syntax: RDNs in certificate order, `+` joins a multi-valued RDN.

    A backslash escapes the next character.
    """
    rdns: list[x509.RelativeDistinguishedName] = []
    for rdn_text in _split_unescaped(text[1:], "/"):
        attributes = [_slash_attribute(part, text) for part in _split_unescaped(rdn_text, "+")]
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


def _slash_attribute(part: str, whole: str) -> x509.NameAttribute[str]:
    type_name, sep, value = part.partition("=")
    if not sep or not type_name.strip():
        raise ValueError(f"expected TYPE=value in {part!r} of {whole!r}")
    oid = _oid_for(type_name.strip())
    return x509.NameAttribute(oid, _unescape(value))


def _oid_for(type_name: str) -> ObjectIdentifier:
    if _DOTTED_OID.match(type_name):
        return ObjectIdentifier(type_name)
    try:
        return _TYPES[type_name]
    except KeyError:
        raise ValueError(f"unknown attribute type {type_name!r}") from None


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` except where a backslash escapes it; escapes are kept for _unescape."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char)
            current.append(next(chars, ""))
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p != ""] if separator == "/" else parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def normalise_value(value: str | bytes) -> str:
    """Case-insensitive, whitespace-folded comparison form: NFC, then simple lower-casing (no
    compatibility mapping: `ﬁ`, `Ｔ` and `ß` stay themselves)."""
    if isinstance(value, bytes):
        return "#" + value.hex()
    folded = unicodedata.normalize("NFC", value).lower()
    return _SPACES.sub(" ", folded).strip()


def name_key(name: x509.Name) -> NameKey:
    """A hashable form of `name` under which equal names (by the rules above) are equal."""
    return tuple(
        frozenset((attr.oid.dotted_string, normalise_value(attr.value)) for attr in rdn)
        for rdn in name.rdns
    )


def display(name: x509.Name) -> str:
    """RFC 4514 text for logs and messages."""
    return name.rfc4514_string()


def subject_text(cert: x509.Certificate) -> str:
    """The certificate's subject for logs, messages and headers; never raises (see below)."""
    return _name_text(cert, subject=True)


def issuer_text(cert: x509.Certificate) -> str:
    """The certificate's issuer name for logs, messages and headers; never raises."""
    return _name_text(cert, subject=False)


def _name_text(cert: x509.Certificate, *, subject: bool) -> str:
    """RFC 4514, or `#` and the hex of the name's DER when cryptography cannot decode it.

    cryptography decodes every string type but BMP and Universal as UTF-8, so a TeletexString
    holding Latin-1 bytes (legacy CAs write "Société" that way, and TLS stacks accept it) makes
    `cert.subject` raise. The hex form names exactly those bytes (`openssl asn1parse` reads it).
    """
    try:
        return (cert.subject if subject else cert.issuer).rfc4514_string()
    except ValueError:
        der = _raw_name(cert, subject)
        return "#" + der.hex() if der is not None else "#undecodable"


@asn1.sequence
class _RawCertificate:
    tbs: list[asn1.TLV]
    signature_algorithm: asn1.TLV
    signature: asn1.TLV


_SEQUENCE_TAG = b"\x30"
_VERSION_TAG = b"\xa0"


def _raw_name(cert: x509.Certificate, subject: bool) -> bytes | None:
    """The DER of the issuer or subject Name, read from the certificate's own bytes."""
    try:
        tbs = asn1.decode_der(_RawCertificate, cert.public_bytes(Encoding.DER)).tbs
    except ValueError:
        return None
    # TBSCertificate: [version], serialNumber, signature, issuer, validity, subject, …
    index = (1 if tbs and tbs[0].tag_bytes == _VERSION_TAG else 0) + (4 if subject else 2)
    if index >= len(tbs) or tbs[index].tag_bytes != _SEQUENCE_TAG:
        return None
    content = tbs[index].data
    return _SEQUENCE_TAG + _der_length(len(content)) + content


def _der_length(length: int) -> bytes:
    """X.690 §8.1.3 definite length: short form below 128, else long form."""
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets
