"""Named policies, chosen per route by Envoy's ext_authz context extensions. Pure.

A route sets `ExtAuthzPerRoute.check_settings.context_extensions: {policy: NAME}`; a request
without one gets the top-level configuration (the policy named `default`). Each policy has its own
allowed issuers, subject/SAN requirements, revocation mode, deny status and enforcement mode.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from cryptography import x509

from authz.core.certificate import dns_and_uri_sans
from authz.core.modes import (
    EnforcementMode,
    RevocationMode,
    choice_text,
    deny_status_problem,
)
from authz.core.names import parse_dn, subject_text

StrEnumT = TypeVar("StrEnumT", bound=StrEnum)

DEFAULT_POLICY = "default"
POLICY_KEY = "policy"
_MATCHERS = (
    "subject_exact", "subject_prefix", "subject_regex",
    "san_exact", "san_prefix", "san_regex", "spiffe_trust_domain",
)  # fmt: skip
_POLICY_KEYS = ("allowed_issuers", "require", "revocation_mode", "deny_status", "mode")
# Old policy keys still read, with a deprecation warning: old name → new name.
POLICY_ALIASES = {"ocsp": "revocation_mode"}


@dataclass(frozen=True)
class Requirement:
    """One way a certificate may satisfy a policy: a test on its subject or its SANs."""

    kind: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, subject: str, sans: tuple[str, ...]) -> bool:
        if self.kind == "subject_exact":
            return subject == self.value
        if self.kind == "subject_prefix":
            return subject.startswith(self.value)
        if self.kind == "subject_regex":
            return self.pattern is not None and self.pattern.fullmatch(subject) is not None
        if self.kind == "san_exact":
            return self.value in sans
        if self.kind == "san_prefix":
            return any(san.startswith(self.value) for san in sans)
        if self.kind == "san_regex":
            return self.pattern is not None and any(self.pattern.fullmatch(s) for s in sans)
        # spiffe_trust_domain: a SPIFFE ID in exactly that trust domain
        return any(s.startswith(f"spiffe://{self.value}/") for s in sans)


@dataclass(frozen=True)
class PolicySpec:
    allowed_issuers: tuple[str, ...]
    require: tuple[Requirement, ...] = ()
    revocation_mode: RevocationMode = RevocationMode.REQUIRE
    deny_status: int = 400
    mode: EnforcementMode = EnforcementMode.ENFORCE

    def subject_allowed(self, leaf: x509.Certificate) -> bool:
        """True when there are no requirements or any one of them matches."""
        if not self.require:
            return True
        subject = subject_text(leaf)  # an undecodable subject shows as #hex and meets no prefix
        sans = dns_and_uri_sans(leaf)
        return any(r.matches(subject, sans) for r in self.require)


def parse_requirement(item: Any) -> Requirement:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise ValueError(f"a requirement is one of {', '.join(_MATCHERS)}: VALUE, got {item!r}")
    ((kind, value),) = item.items()
    if kind not in _MATCHERS or not isinstance(value, str) or not value:
        raise ValueError(f"a requirement is one of {', '.join(_MATCHERS)}: VALUE, got {item!r}")
    pattern = None
    if kind.endswith("_regex"):
        try:
            pattern = re.compile(value)
        except re.error as e:
            raise ValueError(f"{kind}: not a regular expression: {e}") from None
    return Requirement(kind, value, pattern)


def parse_policy(
    name: str, raw: Any, defaults: PolicySpec, deprecated: list[str] | None = None
) -> PolicySpec:
    """One policy from configuration; keys not given are the top-level settings. Old key names
    are read and said in `deprecated`."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"policy {name!r}: expected a mapping")
    raw = dict(raw)
    for old, new in POLICY_ALIASES.items():
        if old in raw:
            if new in raw:
                raise ValueError(f"policy {name!r}: give {new} only ({old} is its old name)")
            raw[new] = raw.pop(old)
            if deprecated is not None:
                deprecated.append(f"policies.{name}.{old} is deprecated; use {new}")
    unknown = set(raw) - set(_POLICY_KEYS)
    if unknown:
        raise ValueError(
            f"policy {name!r}: unknown keys {sorted(unknown)}; known: {', '.join(_POLICY_KEYS)}"
        )
    issuers = raw.get("allowed_issuers", defaults.allowed_issuers)
    if (
        not isinstance(issuers, list | tuple)
        or not issuers
        or not all(isinstance(i, str) for i in issuers)
    ):
        raise ValueError(f"policy {name!r}: allowed_issuers must be a non-empty list of DNs")
    for dn in issuers:
        parse_dn(dn)
    requirements = raw.get("require", [])
    if not isinstance(requirements, list):
        raise ValueError(f"policy {name!r}: require must be a list")
    revocation_mode = _choice(name, "revocation_mode", raw, defaults.revocation_mode)
    mode = _choice(name, "mode", raw, defaults.mode)
    status = raw.get("deny_status", defaults.deny_status)
    problem = deny_status_problem(status)
    if problem:
        raise ValueError(f"policy {name!r}: deny_status {problem}")
    try:
        parsed = tuple(parse_requirement(r) for r in requirements)
    except ValueError as e:
        raise ValueError(f"policy {name!r}: {e}") from None
    return PolicySpec(tuple(issuers), parsed, revocation_mode, status, mode)


def _choice(name: str, key: str, raw: Mapping[str, Any], default: StrEnumT) -> StrEnumT:
    if key not in raw:
        return default
    choices = tuple(m.value for m in type(default))
    try:
        return type(default)(choice_text(raw[key], choices))
    except ValueError as e:
        detail = f": {e}" if isinstance(raw[key], bool) else f" must be one of {', '.join(choices)}"
        raise ValueError(f"policy {name!r}: {key}{detail}") from None


def parse_policies(
    raw: Mapping[str, Any], defaults: PolicySpec, deprecated: list[str] | None = None
) -> dict[str, PolicySpec]:
    """Every named policy plus `default` (the top-level settings, unless configured explicitly)."""
    policies = {DEFAULT_POLICY: defaults}
    for name, spec in raw.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"policy names must be non-empty strings, got {name!r}")
        policies[name] = parse_policy(name, spec, defaults, deprecated)
    return policies
