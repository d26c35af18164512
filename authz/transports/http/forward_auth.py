"""Forward-auth for Traefik (`forwardAuth`), Caddy (`forward_auth`) and nginx (`auth_request`):
the proxy asks before proxying, handing over the client certificate it verified; the answer
decides. The same HTTP listener code as Envoy's HTTP mode, on a listener of its own
(`forward_auth_listen`), so that no path Envoy forwards can reach it.

The URL the operator writes into the proxy's configuration says which proxy asks, and so where
the certificate is and how it is written (`authz.client_cert.forwarded`), and the policy:

    /forward-auth/<traefik|caddy|nginx>[/<policy>]

never a header: a client cannot choose either. The original request's method and URI
(`X-Forwarded-Method`/`-Uri` from Traefik and Caddy, `X-Original-Method`/`-Uri` in the nginx
recipe) go to the decision log.

Answers: 200 with the headers to copy upstream (`X-Client-Cert`, the identity headers); a
refusal with its status, JSON body and `x-mtls-authz-reason` (Traefik and Caddy return it to
the client as it is). nginx turns any status but 2xx, 401 and 403 into a 500, so its refusals
are 403, with the status and body meant for the client in `x-mtls-authz-status` and
`x-mtls-authz-body` for the recipe's `error_page` to give back.
"""

from __future__ import annotations

import functools
from urllib.parse import unquote

from authz.client_cert.forwarded import FORWARD_AUTH_PROXIES
from authz.core.check import CheckHandler
from authz.core.request import CheckInput
from authz.core.verdict import Verdict
from authz.transports.http.listener import (
    REQUEST_ID_HEADER,
    CheckProtocol,
    HttpCheckServer,
    Renderer,
    Routed,
    plain,
    response,
)

PREFIX = "/forward-auth/"
NGINX = "nginx"
NGINX_STATUS = 403
STATUS_HEADER = "x-mtls-authz-status"
BODY_HEADER = "x-mtls-authz-body"
_ORIGINAL_URI = ("x-forwarded-uri", "x-original-uri")
_NOT_FOUND_BODY = b"not a forward-auth URL: /forward-auth/<traefik|caddy|nginx>[/<policy>]\n"
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"
    + f"content-length: {len(_NOT_FOUND_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _NOT_FOUND_BODY
)


render = functools.lru_cache(maxsize=4096)(plain)
"""What Traefik and Caddy understand: 2xx and the headers to copy, or the refusal itself."""


@functools.lru_cache(maxsize=4096)
def render_nginx(verdict: Verdict, close: bool, head: bool = False) -> bytes:
    """For nginx's `auth_request`: a refusal is 403, what the client should get in headers."""
    if verdict.allowed:
        return render(verdict, close, head)
    headers = [*verdict.headers, (STATUS_HEADER, str(verdict.status)), (BODY_HEADER, verdict.body)]
    return response(NGINX_STATUS, headers, verdict.body.encode(), close, head)


class ForwardAuthProtocol(CheckProtocol):
    def route(self, headers: dict[str, str], path: str) -> Routed | bytes:
        server = self._server
        assert isinstance(server, ForwardAuthServer)
        target = path.split("?", 1)[0]
        if not target.startswith(PREFIX):
            return _NOT_FOUND
        proxy, _, policy = target[len(PREFIX) :].partition("/")
        source = FORWARD_AUTH_PROXIES.get(proxy)
        if source is None or "/" in policy:
            return _NOT_FOUND
        original = next((headers[h] for h in _ORIGINAL_URI if h in headers), "")
        request = CheckInput(
            certificate=headers.get(source.header, ""),
            policy=unquote(policy),
            request_id=headers.get(REQUEST_ID_HEADER, ""),
            path=original,
        )
        renderer: Renderer = render_nginx if proxy == NGINX else render
        return server.handlers[proxy], request, renderer


class ForwardAuthServer(HttpCheckServer):
    """The forward-auth listener: one decision handler per proxy (each reads the certificate
    from its own header)."""

    protocol = ForwardAuthProtocol

    def __init__(
        self,
        handlers: dict[str, CheckHandler],
        request_timeout: float,
        idle_timeout: float,
    ) -> None:
        super().__init__(handlers[NGINX], request_timeout, idle_timeout)
        self.handlers = handlers
