"""What a transport hands the core for one Check: transport-neutral, plain data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckInput:
    """The parts of Envoy's request the decision reads, however they arrived."""

    certificate: str
    """The client's leaf as Envoy hands it over: URL-encoded PEM, empty when there is none."""
    xfcc: str = ""
    """The `x-forwarded-client-cert` header Envoy set, if any (the client's chain, a hint)."""
    policy: str = ""
    """The policy the route names (empty: the default policy)."""
    cached_as: str | None = None
    """The policy Envoy's verdict cache keys this route on, when Envoy sends it."""
    request_id: str = ""
    path: str = ""
