"""The revocation port: what the decision core asks a revocation source (OCSP, CRLs) and the
vocabulary of its answers. The core owns it; the sources in `authz.revocation` implement it.
Pure: no I/O.

A source gives either a verified `RevocationStatus` (good, revoked, unknown: definitive) or a
`RevocationFailure` saying why it has none, and how it found the answer (`Lookup`). Failure
values are the metric and log vocabulary.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography import x509


class Lookup(StrEnum):
    """How a source found its answer: in its cache, by asking (`miss`), by joining a request
    already under way (`coalesced`), or in its cache while refreshing it (`stale_refresh`)."""

    HIT = "hit"
    MISS = "miss"
    COALESCED = "coalesced"
    STALE_REFRESH = "stale_refresh"


class CertStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class RevocationFailure(StrEnum):
    """Why no status could be established."""

    UNPARSABLE = "unparsable"
    UNSUCCESSFUL = (
        "unsuccessful"  # malformedRequest, internalError, tryLater, sigRequired, unauthorized
    )
    SIGNER_NOT_FOUND = "signer_not_found"
    UNAUTHORIZED_SIGNER = "unauthorized_signer"
    BAD_SIGNATURE = "bad_signature"
    CERT_ID_MISMATCH = "cert_id_mismatch"
    NOT_YET_VALID = "not_yet_valid"
    STALE = "stale"
    BAD_VALIDITY = "bad_validity"
    NONCE_MISMATCH = "nonce_mismatch"
    CRITICAL_EXTENSION = "critical_extension"
    WEAK_SIGNATURE = "weak_signature_algorithm"  # SHA-1, refused unless allow_sha1_signatures
    UNSUPPORTED = "unsupported"
    # Transport failures, raised by the fetcher.
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    NETWORK = "network"
    CIRCUIT_OPEN = "circuit_open"  # the source failed repeatedly; not asked for a while
    RESPONDER_NOT_ALLOWED = "responder_not_allowed"  # not in revocation_allowed_hosts


class RevocationError(Exception):
    """Raised by verification and fetching; callers turn it into a `RevocationOutcome`."""

    def __init__(self, failure: RevocationFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RevocationStatus:
    """A verified answer about one certificate, from an OCSP response or a CRL."""

    status: CertStatus
    this_update: dt.datetime
    next_update: dt.datetime | None
    valid_until: dt.datetime
    """nextUpdate, or thisUpdate + max_age when the source gave none."""
    revocation_time: dt.datetime | None = None
    revocation_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    """What one source said about one certificate: a verified status, or why there is none."""

    url: str
    status: RevocationStatus | None = None
    failure: RevocationFailure | None = None
    detail: str = ""
    latency: float = 0.0
    shared: bool = field(default=False, compare=False)
    """Read from the shared revocation cache (another replica fetched it), not from the source:
    where it came from this time, not part of the answer."""

    @classmethod
    def failed(cls, url: str, error: RevocationError, latency: float = 0.0) -> RevocationOutcome:
        return cls(url, failure=error.failure, detail=error.detail, latency=latency)


class RevocationSource(Protocol):
    """OCSP or CRL: where to ask about a certificate, and the answer."""

    names: str
    """What a certificate names to point at this source, for messages ("OCSP responder")."""

    def source_url(self, leaf: x509.Certificate) -> str | None: ...

    async def check(
        self, leaf: x509.Certificate, issuer: x509.Certificate, url: str
    ) -> tuple[RevocationOutcome, Lookup]: ...


def check_freshness(
    this_update: dt.datetime,
    next_update: dt.datetime | None,
    now: dt.datetime,
    skew: dt.timedelta,
    max_age: dt.timedelta,
) -> dt.datetime:
    """Until when an answer (OCSP or CRL) is valid; raises RevocationError when it is not valid now.

    thisUpdate ≤ now + skew, nextUpdate ≥ thisUpdate, now ≤ nextUpdate + skew; without a
    nextUpdate an answer is valid for `max_age` after thisUpdate.
    """
    if this_update > now + skew:
        raise RevocationError(
            RevocationFailure.NOT_YET_VALID, f"thisUpdate {this_update} is in the future"
        )
    if next_update is not None and next_update < this_update:
        raise RevocationError(RevocationFailure.BAD_VALIDITY, "nextUpdate is before thisUpdate")
    valid_until = next_update if next_update is not None else this_update + max_age
    if now > valid_until + skew:
        raise RevocationError(RevocationFailure.STALE, f"the answer expired at {valid_until}")
    return valid_until
