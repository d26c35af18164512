"""Issuer policy: which CAs may issue client certificates. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from authz.core.names import NameKey, name_key, parse_dn


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
