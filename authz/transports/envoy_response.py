"""Decision → Envoy CheckResponse: headers to set and remove upstream, or the denied response.

Header overwrite: Envoy up to 1.37 reads only the deprecated `append` BoolValue in OkHttpResponse
headers and ignores `append_action` (envoyproxy/envoy#42857); later versions prefer `append` when it
is set. Setting `append: false` overwrites on both, and `append_action` says the same for readers
of the message.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import wrappers_pb2
from google.rpc import code_pb2, status_pb2

from authz.core.decision import Decision
from authz.core.identity import IDENTITY_HEADERS, identity_headers
from authz.core.reasons import FIXED_STATUS, Reason
from authz.core.verdict import with_verdict_metadata

REASON_HEADER = "x-mtls-authz-reason"
WOULD_DENY_HEADER = "x-mtls-authz-would-deny"
# Headers this service owns upstream besides the certificate header: a client-sent copy of any of
# them is removed on every allowed request, so the backend can trust what it sees.
OWNED_HEADERS: tuple[str, ...] = ("x-mtls-authz-revocation", WOULD_DENY_HEADER, *IDENTITY_HEADERS)

VALID_DENY_STATUSES: frozenset[int] = frozenset(
    value.number for value in http_status_pb2.StatusCode.DESCRIPTOR.values if value.number >= 400
)


class CertHeaderFormat(StrEnum):
    BASE64_DER = "base64-der"
    """Standard base64 of the DER, one line (as Azure Application Gateway forwards it)."""
    PEM_URL = "pem-url"
    """URL-encoded PEM (as Envoy's XFCC and nginx's $ssl_client_escaped_cert)."""
    RFC9440 = "rfc9440"
    """`:base64-DER:`, an RFC 8941 byte sequence as RFC 9440 `Client-Cert` defines."""


def _encode_base64_der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")


def _encode_pem_url(cert: x509.Certificate) -> str:
    return quote(cert.public_bytes(Encoding.PEM).decode("ascii"), safe="")


def _encode_rfc9440(cert: x509.Certificate) -> str:
    return f":{_encode_base64_der(cert)}:"


CERT_ENCODERS: dict[CertHeaderFormat, Callable[[x509.Certificate], str]] = {
    CertHeaderFormat.BASE64_DER: _encode_base64_der,
    CertHeaderFormat.PEM_URL: _encode_pem_url,
    CertHeaderFormat.RFC9440: _encode_rfc9440,
}


@functools.lru_cache(maxsize=4096)
def encode_certificate(fmt: CertHeaderFormat, leaf: x509.Certificate) -> str:
    """The header value, computed once per certificate and format (clients come back)."""
    return CERT_ENCODERS[fmt](leaf)


def overwrite(name: str, value: str) -> base_pb2.HeaderValueOption:
    """A header option that replaces every client-sent value of `name` (see module docstring)."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append=wrappers_pb2.BoolValue(value=False),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


@dataclass(frozen=True)
class ResponseBuilder:
    """Turns decisions into CheckResponses for one configuration; derived values precomputed."""

    cert_header: str
    cert_header_format: CertHeaderFormat
    deny_status: int
    retry_after: int = 5
    """Seconds a client is told to wait after `revocation_check_failed`."""
    identity: tuple[str, ...] = ()
    """Identity headers to send upstream (see `authz.core.identity`)."""
    verdict_cache_ttl: float = 0.0
    """Longest Envoy may replay a verdict (`authz.core.verdict`); 0 sends no metadata."""
    policy: str = "default"
    """The policy these responses decide for: told to the verdict cache with every verdict."""

    @functools.cached_property
    def _owned(self) -> tuple[str, ...]:
        """Every header this service sets upstream, the certificate header first."""
        return (self.cert_header.lower(), *OWNED_HEADERS)

    @property
    def _uses_chain(self) -> bool:
        return "chain" in self.identity or "rfc9440" in self.identity

    def build(self, decision: Decision, ttl: int | None = None) -> external_auth_pb2.CheckResponse:
        """The response for a decision, with verdict-cache metadata when `ttl` is given.

        Responses are shared between Checks of the same client (gRPC only serializes them), so a
        returning client costs a cache lookup.
        """
        if decision.allowed and decision.leaf is not None:
            xfcc = decision.xfcc if self._uses_chain else ""
            return _cached_allow(self, decision.leaf, decision.upstream_headers, xfcc, ttl)
        if decision.allowed and decision.audit_reason is not None:
            response = self.allow(None, decision.upstream_headers)  # audit, no usable certificate
            return response if ttl is None else with_verdict_metadata(response, ttl, self.policy)
        return _cached_deny(self, decision.reason or Reason.INTERNAL_ERROR, decision.message, ttl)

    def allow(
        self, leaf: x509.Certificate | None, extra: Iterable[tuple[str, str]] = (), xfcc: str = ""
    ) -> external_auth_pb2.CheckResponse:
        headers = []
        setting: set[str] = set()
        if leaf is not None:
            headers.append(
                overwrite(self.cert_header, encode_certificate(self.cert_header_format, leaf))
            )
            setting.add(self.cert_header.lower())
            if self.identity:
                extra = (*extra, *identity_headers(leaf, xfcc, self.identity))
        headers.extend(overwrite(name, header_value) for name, header_value in extra)
        setting.update(name.lower() for name, _ in extra)
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=headers,
                headers_to_remove=[name for name in self._owned if name not in setting],
            ),
        )

    def deny(self, reason: Reason, message: str) -> external_auth_pb2.CheckResponse:
        http_status = FIXED_STATUS.get(reason, self.deny_status)
        body = json.dumps({"error": reason.value, "message": message})
        grpc_code = (
            code_pb2.INTERNAL if reason is Reason.INTERNAL_ERROR else code_pb2.PERMISSION_DENIED
        )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=grpc_code, message=reason.value),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status),
                headers=self._deny_headers(reason),
                body=body,
            ),
        )

    def _deny_headers(self, reason: Reason) -> list[base_pb2.HeaderValueOption]:
        headers = [
            overwrite("content-type", "application/json"),
            overwrite(REASON_HEADER, reason.value),
        ]
        if reason is Reason.REVOCATION_CHECK_FAILED:
            headers.append(overwrite("retry-after", str(self.retry_after)))
        return headers


@functools.lru_cache(maxsize=4096)
def _cached_allow(
    builder: ResponseBuilder,
    leaf: x509.Certificate,
    extra: tuple[tuple[str, str], ...],
    xfcc: str,
    ttl: int | None,
) -> external_auth_pb2.CheckResponse:
    response = builder.allow(leaf, extra, xfcc)
    return response if ttl is None else with_verdict_metadata(response, ttl, builder.policy)


@functools.lru_cache(maxsize=1024)
def _cached_deny(
    builder: ResponseBuilder, reason: Reason, message: str, ttl: int | None
) -> external_auth_pb2.CheckResponse:
    response = builder.deny(reason, message)
    return response if ttl is None else with_verdict_metadata(response, ttl, builder.policy)
