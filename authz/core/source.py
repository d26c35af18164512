"""The certificate-source port: where the decision core reads the client's leaf, and the
default source — Envoy's own `attributes.source.certificate`, the leaf of the TLS handshake it
verified (`include_peer_certificate`), which a `CheckInput` carries as `certificate`. Other
sources (XFCC, in `authz.client_cert`) implement the same interface. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from authz.core.certificate import decode_source_certificate
from authz.core.request import CheckInput


@dataclass(frozen=True, slots=True)
class Presented:
    """Where a Check's client certificate is, as text: cheap to find, parsed only when needed."""

    field: str
    """URL-encoded PEM of the leaf (Envoy's escaping); the verified-certificate memo's key."""
    chain_hint: str = ""
    """XFCC text in which the client's chain for this leaf is found (candidate intermediates
    and the chain identity headers): Envoy's whole header, or just the element used."""
    peer: bool = True
    """The leaf is the certificate of the TLS peer Envoy verified on this connection: the key
    Envoy's verdict cache uses. A leaf from XFCC is only when Envoy also sent its peer
    certificate and it is the same one; otherwise the TLS peer may be a proxy in front of
    many clients, and a verdict replayed under its key would be replayed for all of them."""


class CertificateSource(Protocol):
    """Finds the leaf Envoy verified for this connection in a Check's input.

    `present` is cheap and raises `Denied` when the input does not have the shape this source
    needs; `leaf` parses what it found and raises `Denied` for a missing or bad certificate.
    """

    name: str

    def present(self, request: CheckInput) -> Presented: ...

    def leaf(self, presented: Presented) -> x509.Certificate: ...


class PeerCertificate:
    """Envoy's `attributes.source.certificate`: URL-encoded PEM of the verified leaf."""

    name = "peer"

    def present(self, request: CheckInput) -> Presented:
        return Presented(request.certificate, request.xfcc)

    def leaf(self, presented: Presented) -> x509.Certificate:
        return decode_source_certificate(presented.field)


PEER = PeerCertificate()
