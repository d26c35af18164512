"""Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`): CheckRequest → core
input, core verdict → CheckResponse. Nothing else happens here.

Header overwrite: Envoy up to 1.37 reads only the deprecated `append` BoolValue in OkHttpResponse
headers and ignores `append_action` (envoyproxy/envoy#42857); later versions prefer `append` when it
is set. Setting `append: false` overwrites on both, and `append_action` says the same for readers
of the message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import wrappers_pb2
from google.rpc import code_pb2, status_pb2

from authz.core.certificate import XFCC_HEADER
from authz.core.check import CheckHandler
from authz.core.policies import POLICY_KEY
from authz.core.reasons import Reason
from authz.core.request import CheckInput
from authz.core.verdict import INTERNAL_ERROR_VERDICT, Verdict

log = logging.getLogger("authz.check")

REQUEST_ID_HEADER = "x-request-id"
# Route metadata under the Lua filter's name holds the policy the verdict cache keys on
# (envoy/verdict-cache.lua); with `route_metadata_context_namespaces` Envoy sends it here.
VERDICT_CACHE_NAMESPACE = "envoy.filters.http.lua"


def check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    attributes = request.attributes
    http = attributes.request.http
    headers = http.headers
    xfcc = headers.get(XFCC_HEADER, "")
    request_id = headers.get(REQUEST_ID_HEADER, "")
    if not (xfcc and request_id) and http.HasField("header_map"):
        xfcc = xfcc or raw_header(http, XFCC_HEADER)
        request_id = request_id or raw_header(http, REQUEST_ID_HEADER)
    route = attributes.route_metadata_context.filter_metadata.get(VERDICT_CACHE_NAMESPACE)
    cached = route.fields.get(POLICY_KEY) if route is not None else None
    return CheckInput(
        certificate=attributes.source.certificate,
        xfcc=xfcc,
        policy=attributes.context_extensions.get(POLICY_KEY, ""),
        cached_as=cached.string_value if cached is not None else None,
        request_id=request_id,
        path=http.path,
    )


def raw_header(http: Any, name: str) -> str:
    """A header by lower-case name from `header_map` (Envoy's `encode_raw_headers`)."""
    for header in http.header_map.headers:
        if header.key.lower() == name:
            return str(header.value or header.raw_value.decode("utf-8", errors="replace"))
    return ""


def overwrite(name: str, value: str) -> base_pb2.HeaderValueOption:
    """A header option that replaces every client-sent value of `name` (see module docstring)."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append=wrappers_pb2.BoolValue(value=False),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


@functools.lru_cache(maxsize=4096)
def render(verdict: Verdict) -> external_auth_pb2.CheckResponse:
    """The CheckResponse for a verdict. Shared between Checks of the same verdict (gRPC only
    serializes it), so a returning client costs a cache lookup."""
    if verdict.allowed:
        response = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[overwrite(name, value) for name, value in verdict.headers],
                headers_to_remove=list(verdict.remove),
            ),
        )
    else:
        reason = verdict.reason or Reason.INTERNAL_ERROR
        grpc_code = (
            code_pb2.INTERNAL if reason is Reason.INTERNAL_ERROR else code_pb2.PERMISSION_DENIED
        )
        response = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=grpc_code, message=reason.value),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=verdict.status),
                headers=[overwrite(name, value) for name, value in verdict.headers],
                body=verdict.body,
            ),
        )
    if verdict.ttl is not None:
        # Emitted under `envoy.filters.http.ext_authz` for the verdict cache and access logs.
        response.dynamic_metadata.update(verdict.cache_metadata())
    return response


INTERNAL_ERROR_RESPONSE = render(INTERNAL_ERROR_VERDICT)


@functools.lru_cache(maxsize=4096)
def render_wire(verdict: Verdict) -> bytes:
    """`render(verdict)` serialized, as gRPC sends it: a returning client's answer is written
    from these bytes without building or serializing a message."""
    wire: bytes = render(verdict).SerializeToString()
    return wire


INTERNAL_ERROR_WIRE = render_wire(INTERNAL_ERROR_VERDICT)
SERVICE = "envoy.service.auth.v3.Authorization"


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, checks: CheckHandler) -> None:
        self._checks = checks

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Any
    ) -> external_auth_pb2.CheckResponse:
        return external_auth_pb2.CheckResponse.FromString(await self.check_wire(request, context))

    async def check_wire(self, request: external_auth_pb2.CheckRequest, context: Any) -> bytes:
        """What the server answers: the serialized CheckResponse (see `add_to_server`)."""
        try:
            return render_wire(await self._checks(check_input(request)))
        except asyncio.CancelledError:
            raise
        except Exception:
            # Nothing may escape Check: a gRPC error would let the request through under
            # `failure_mode_allow: true`, with whatever headers the client sent.
            log.exception("check failed", extra={"reason": Reason.INTERNAL_ERROR.value})
            return INTERNAL_ERROR_WIRE


def add_to_server(servicer: AuthorizationServicer, server: Any) -> None:
    """Authorization/Check on `server`, answering the bytes `check_wire` returns (no response
    serializer: they are already a CheckResponse)."""
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            servicer.check_wire,
            request_deserializer=external_auth_pb2.CheckRequest.FromString,
            response_serializer=None,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
