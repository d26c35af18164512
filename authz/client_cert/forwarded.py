"""The client certificate as Traefik, Caddy and nginx hand it to a forward-auth service, each in
the header its recipe sets (`deploy/integrations/{traefik,caddy,nginx}`):

- Traefik, `passTLSClientCert` with `pem: true` → `X-Forwarded-Tls-Client-Cert`: each certificate
  of the client's chain as PEM without its BEGIN/END lines and newlines, leaf first, joined with
  `,` (`pkg/middlewares/passtlsclientcert`, checked on 3.7.15); earlier releases also URL-escaped
  each, so both are read. The leaf is the first.
- Caddy, `header_up X-Client-Cert-Der {http.request.tls.client.certificate_der_base64}`: the
  leaf's DER in base64.
- nginx, `proxy_set_header X-Ssl-Client-Cert $ssl_client_escaped_cert`: the leaf's PEM,
  URL-encoded — as Envoy's own field.

A proxy sends the header only for a connection with a verified client certificate; the recipes
remove any copy a client sends, so what arrives here is the proxy's. Pure.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from cryptography import x509

from authz.core.certificate import MAX_CERTIFICATE_FIELD_CHARS, decode_source_certificate
from authz.core.reasons import Denied, Reason
from authz.core.request import CheckInput
from authz.core.source import Presented

TRAEFIK_HEADER = "x-forwarded-tls-client-cert"
CADDY_HEADER = "x-client-cert-der"
NGINX_HEADER = "x-ssl-client-cert"

_MISSING = "No client certificate was presented."


class _Forwarded:
    """A forward-auth proxy's certificate header: `present` finds it, `leaf` decodes it."""

    name: str
    header: str

    def present(self, request: CheckInput) -> Presented:
        # The proxy verified this connection's certificate: it is the TLS peer's.
        return Presented(request.certificate)

    def leaf(self, presented: Presented) -> x509.Certificate:
        field = presented.field.strip()
        if not field:
            raise Denied(Reason.MISSING_CERTIFICATE, _MISSING)
        if len(field) > MAX_CERTIFICATE_FIELD_CHARS:
            raise Denied(
                Reason.MALFORMED_CERTIFICATE,
                f"The client certificate header is larger than {MAX_CERTIFICATE_FIELD_CHARS} "
                "bytes.",
            )
        return self._decode(field)

    def _decode(self, field: str) -> x509.Certificate:
        raise NotImplementedError


def _der(text: str, what: str) -> x509.Certificate:
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Denied(Reason.MALFORMED_CERTIFICATE, f"{what} is not base64.") from None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise Denied(Reason.MALFORMED_CERTIFICATE, f"{what} is not a certificate.") from None


class TraefikCertificate(_Forwarded):
    name = "traefik"
    header = TRAEFIK_HEADER

    def _decode(self, field: str) -> x509.Certificate:
        leaf = field.split(",", 1)[0].strip()
        try:  # base64 holds no `%`: unquoting an unescaped body changes nothing
            text = unquote(leaf, errors="strict")
        except UnicodeDecodeError:
            raise Denied(
                Reason.MALFORMED_CERTIFICATE, "The client certificate is not URL-encoded UTF-8."
            ) from None
        return _der(text, "The client certificate")


class CaddyCertificate(_Forwarded):
    name = "caddy"
    header = CADDY_HEADER

    def _decode(self, field: str) -> x509.Certificate:
        return _der(field, "The client certificate")


class NginxCertificate(_Forwarded):
    name = "nginx"
    header = NGINX_HEADER

    def _decode(self, field: str) -> x509.Certificate:
        return decode_source_certificate(field)


FORWARD_AUTH_PROXIES: dict[str, _Forwarded] = {
    source.name: source for source in (TraefikCertificate(), CaddyCertificate(), NginxCertificate())
}
"""The proxies a forward-auth request may come from, by the name in its URL."""
