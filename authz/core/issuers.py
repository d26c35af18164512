"""Issuer policy: which CAs may issue client certificates. Pure."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from authz.core.names import NameKey, display, name_key, parse_dn


@dataclass(frozen=True)
class IssuerPolicy:
    """An allow-list of issuer DNs, compared after normalisation (see `authz.core.names`)."""

    allowed: frozenset[NameKey]

    @classmethod
    def from_dns(cls, dns: Iterable[str]) -> IssuerPolicy:
        """Build from configured DN strings; raises ValueError naming the bad one."""
        return cls(frozenset(name_key(parse_dn(dn)) for dn in dns))

    def allows(self, issuer: x509.Name) -> bool:
        return name_key(issuer) in self.allowed


def reversed_issuers(dns: Sequence[str], bundle_subjects: Sequence[x509.Name]) -> list[str]:
    """An error for each allowed issuer that is a bundle CA's name in reverse order: valid RFC
    4514, but another name (RFC 4514 writes the most specific RDN first), so it would refuse
    every client of that CA."""
    present = {name_key(name): display(name) for name in bundle_subjects}
    errors = []
    for dn in dns:
        key = name_key(parse_dn(dn))
        if key not in present and tuple(reversed(key)) in present:
            errors.append(
                f"allowed issuer {dn!r} is the bundle's {present[tuple(reversed(key))]!r} in "
                "reverse order: RFC 4514 writes the most specific RDN (CN) first, so as written "
                "it names another issuer and would refuse every client of that CA"
            )
    return errors


def issuers_without_ca(dns: Sequence[str], bundle_subjects: Sequence[x509.Name]) -> list[str]:
    """A warning for each allowed issuer no bundle certificate has as its subject.

    Such an issuer can still be reached through intermediates a client offers (XFCC `Chain=`), so
    this is a warning, not an error; but usually it is a typo, or a DN that an unquoted YAML flow
    list split at its commas (`[CN=Lab CA,O=Lab]` is two issuers). Each warning names the closest
    DN the bundle has."""
    present = {name_key(name): display(name) for name in bundle_subjects}
    displays = list(present.values())
    warnings = []
    for index, dn in enumerate(dns):
        key = name_key(parse_dn(dn))
        if key in present or tuple(reversed(key)) in present:  # reversed: an error elsewhere
            continue
        joined = _rejoined(dns, index, present)
        if joined:
            warnings.append(
                f"allowed issuer {dn!r} is part of {joined!r}, split at its commas: quote the DN"
                " in YAML (a flow list [a,b] splits at every comma)"
            )
            continue
        close = difflib.get_close_matches(dn, displays, n=1, cutoff=0.0)
        nearest = f"; closest in the bundle: {close[0]!r}" if close else "; the bundle is empty"
        warnings.append(
            f"allowed issuer {dn!r} matches no CA certificate in the trust bundle{nearest}"
            " (only a client-offered intermediate chaining to the bundle can be that issuer)"
        )
    return warnings


def _rejoined(dns: Sequence[str], index: int, present: dict[NameKey, str]) -> str | None:
    """The bundle DN that consecutive entries around `index` make when joined with commas."""
    for start in range(max(0, index - 7), index + 1):
        for end in range(index + 1, min(len(dns), start + 8) + 1):
            if end - start < 2:
                continue
            text = ",".join(dns[start:end])
            try:
                key = name_key(parse_dn(text))
            except ValueError:
                continue
            if key in present:
                return present[key]
    return None
