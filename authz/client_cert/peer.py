"""Envoy's `attributes.source.certificate` (`include_peer_certificate: true`): the leaf of the
TLS handshake Envoy itself verified, as URL-encoded PEM."""

from __future__ import annotations

from cryptography import x509

from authz.client_cert.source import Presented
from authz.core.certificate import decode_source_certificate
from authz.core.request import CheckInput


class PeerCertificate:
    name = "peer"

    def present(self, request: CheckInput) -> Presented:
        return Presented(request.certificate, request.xfcc)

    def leaf(self, presented: Presented) -> x509.Certificate:
        return decode_source_certificate(presented.field)


PEER = PeerCertificate()
