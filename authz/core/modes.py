"""The closed sets a configuration chooses from, spelled once: revocation mode and sources,
enforcement mode, and which HTTP statuses a refusal may have."""

from __future__ import annotations

from enum import StrEnum


class RevocationMode(StrEnum):
    """What happens when no source gives a verified revocation answer."""

    REQUIRE = "require"
    """No verified answer, no entry (503 when the source fails)."""
    SOFT_FAIL = "soft-fail"
    """Revoked and unknown are refused; a failed check lets the client in, marked unchecked."""
    OFF = "off"


class RevocationSources(StrEnum):
    """Where revocation status comes from, in order: the first verified answer decides."""

    OCSP = "ocsp"
    CRL = "crl"
    OCSP_THEN_CRL = "ocsp-then-crl"
    CRL_THEN_OCSP = "crl-then-ocsp"

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(self.value.split("-then-"))


class EnforcementMode(StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"
    """Never refuse; tell the backend what would have been refused."""


def choice_text(value: object, choices: tuple[str, ...]) -> str:
    """A mode as written in YAML: an unquoted `off` (or `no`, `false`) arrives as the boolean
    false, and `on`/`yes`/`true` as true. Read false as `off` where `off` is a choice (and true
    as `on`); any other boolean is refused with a message saying how to write the value."""
    if isinstance(value, bool):
        word = "on" if value else "off"
        if word in choices:
            return word
        raise ValueError(
            f"YAML read an unquoted {'on/yes/true' if value else 'off/no/false'} as a boolean;"
            f" write one of {', '.join(choices)}"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
    return value.strip()


# The 4xx and 5xx statuses Envoy's `envoy.type.v3.StatusCode` knows: a DeniedHttpResponse can
# carry only these (a test compares this list with the protobuf enum).
DENY_STATUSES: frozenset[int] = frozenset(
    {
        *range(400, 418),
        421, 422, 423, 424, 426, 428, 429, 431,
        *range(500, 509),
        510, 511,
    }
)  # fmt: skip


def deny_status_problem(value: object) -> str | None:
    """Why `value` cannot be a refusal's status, or None when it can."""
    if not isinstance(value, int) or isinstance(value, bool) or value not in DENY_STATUSES:
        return "must be an HTTP status from 400 to 599 that Envoy knows"
    return None
