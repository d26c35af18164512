"""Envoy's `attributes.source.certificate` (`include_peer_certificate: true`): the leaf of the
TLS handshake Envoy itself verified, as URL-encoded PEM."""

from __future__ import annotations

from cryptography import x509

from authz.core.certificate import decode_source_certificate
from authz.core.request import CheckInput


class PeerCertificate:
    name = "peer"

    def field(self, request: CheckInput) -> str:
        return request.certificate

    def leaf(self, field: str) -> x509.Certificate:
        return decode_source_certificate(field)


PEER = PeerCertificate()
