"""Envoy's HTTP ext_authz (`http_service`): the check request → core input, core verdict → HTTP
response, on the shared listener (`listener.py`); nothing else happens here.

What Envoy sends (checked on 1.36.2 and 1.40.0): the original method and `path_prefix` + path,
the headers `allowed_headers` admits, and `authorization_request.headers_to_add`, whose values may
be formatters. The recommended wiring adds the leaf and the route's policy itself:

    x-mtls-authz-peer-cert: %DOWNSTREAM_PEER_CERT%                        (URL-encoded PEM)
    x-mtls-authz-policy:    %METADATA(ROUTE:envoy.filters.http.lua:policy)%

A client-sent header of either name reaches mtls-authz only if `allowed_headers` admits it (it
must not), and an allow removes client-sent copies upstream.

What Envoy does with the answer: 200 allows, copying the headers `allowed_upstream_headers`
admits (overwriting) and removing those named in `x-envoy-auth-headers-to-remove`; any other 4xx
refuses with our status, body and the headers `allowed_client_headers` admits. **A 5xx is an
error to Envoy**: the client gets `status_on_error`, and with `failure_mode_allow: true` the
request would pass — so in HTTP mode `failure_mode_allow` must stay false (as shipped).
"""

from __future__ import annotations

import functools

from authz.core.certificate import XFCC_HEADER
from authz.core.request import CheckInput
from authz.core.verdict import PEER_CERT_HEADER, POLICY_HEADER, Verdict
from authz.transports.http.listener import (
    REQUEST_ID_HEADER,
    CheckProtocol,
    HttpCheckServer,
    Routed,
    response,
)

REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
# Prefix of the headers that carry the verdict for Envoy's verdict cache
# (`dynamic_metadata_from_headers`); values are strings.
CACHE_HEADER_PREFIX = "x-mtls-authz-cache-"
# Envoy writes "-" for a formatter with no value (no certificate, no route metadata).
_ABSENT = ("", "-")


def check_input(headers: dict[str, str], path: str) -> CheckInput:
    certificate = headers.get(PEER_CERT_HEADER, "")
    policy = headers.get(POLICY_HEADER, "")
    return CheckInput(
        certificate="" if certificate in _ABSENT else certificate,
        xfcc=headers.get(XFCC_HEADER, ""),
        policy="" if policy in _ABSENT else policy,
        request_id=headers.get(REQUEST_ID_HEADER, ""),
        path=path,
    )


@functools.lru_cache(maxsize=4096)
def render(verdict: Verdict, close: bool, head: bool = False) -> bytes:
    """The HTTP/1.1 response for a verdict, shared between requests with the same verdict. The
    answer to a HEAD request has no body (RFC 9110 §9.3.2): its Content-Length says how long the
    body would be, and the bytes are not sent, or Envoy would read them as the next response."""
    headers = list(verdict.headers)
    body = b""
    if verdict.allowed:
        headers.append((REMOVE_HEADER, ",".join(verdict.remove)))
    else:
        body = verdict.body.encode()
    if verdict.ttl is not None:
        headers.extend(_cache_headers(verdict))
    return response(verdict.status, headers, body, close, head)


def _cache_headers(verdict: Verdict) -> list[tuple[str, str]]:
    """The verdict for Envoy's verdict cache, as string headers (`dynamic_metadata_from_headers`
    turns them into `envoy.filters.http.ext_authz` metadata; `envoy/verdict-cache.lua` reads
    them in HTTP mode). The headers to set and remove are the response's own."""
    metadata = verdict.cache_metadata()
    fields = [("ttl", str(metadata["ttl"])), ("policy", verdict.policy)]
    fields.append(("generation", verdict.generation))
    fields.append(("decision", metadata["decision"]))
    if verdict.allowed:
        fields += [(f"set-{name}", value) for name, value in metadata["set"].items()]
        fields.append(("remove", ",".join(metadata["remove"])))
    else:
        fields += [("status", str(verdict.status)), ("body", verdict.body)]
        fields.append(("reason", metadata["reason"]))
    return [(CACHE_HEADER_PREFIX + name, value) for name, value in fields]


class EnvoyProtocol(CheckProtocol):
    def route(self, headers: dict[str, str], path: str) -> Routed:
        return self._checks, check_input(headers, path), render


class EnvoyHttpServer(HttpCheckServer):
    """`http_listen`: Envoy's HTTP ext_authz."""

    protocol = EnvoyProtocol
