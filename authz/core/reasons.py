"""The closed set of reason codes: the one vocabulary for responses, logs and metrics."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a request was refused. Values are stable: clients and dashboards match on them."""

    MISSING_CERTIFICATE = "missing_certificate"
    MALFORMED_CERTIFICATE = "malformed_certificate"
    NOT_A_CLIENT_CERTIFICATE = "not_a_client_certificate"
    UNSUPPORTED_CRITICAL_EXTENSION = "unsupported_critical_extension"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    ISSUER_NOT_ALLOWED = "issuer_not_allowed"
    ISSUER_UNKNOWN = "issuer_unknown"
    WEAK_SIGNATURE_ALGORITHM = "weak_signature_algorithm"
    XFCC_INVALID = "xfcc_invalid"
    SUBJECT_NOT_ALLOWED = "subject_not_allowed"
    CERTIFICATE_BLOCKED = "certificate_blocked"
    CERTIFICATE_REVOKED = "certificate_revoked"
    CERTIFICATE_STATUS_UNKNOWN = "certificate_status_unknown"
    NO_REVOCATION_SOURCE = "no_revocation_source"
    REVOCATION_CHECK_FAILED = "revocation_check_failed"
    UNKNOWN_POLICY = "unknown_policy"
    POLICY_MISMATCH = "policy_mismatch"
    INTERNAL_ERROR = "internal_error"


# Reasons whose HTTP status is fixed, whatever `deny_status` says: they are not the client's fault.
FIXED_STATUS: dict[Reason, int] = {
    Reason.REVOCATION_CHECK_FAILED: 503,  # the responder failed; the client may retry
    Reason.UNKNOWN_POLICY: 500,  # the route names a policy the configuration lacks
    Reason.POLICY_MISMATCH: 500,  # Envoy's two places for the route's policy disagree
    Reason.INTERNAL_ERROR: 500,
}


class Denied(Exception):
    """Raised by the pure checks when a request must be refused.

    `message` is one sentence safe to show the client: it never holds a stack trace or key material.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
