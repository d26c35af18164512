"""The certificate-source interface the decision core reads the client's leaf through."""

from __future__ import annotations

from typing import Protocol

from cryptography import x509

from authz.core.request import CheckInput


class CertificateSource(Protocol):
    """Finds the leaf Envoy verified for this connection in a Check's input.

    `field` is cheap and names the leaf (the verified-certificate memo is keyed on it); `leaf`
    parses it and raises `Denied` (missing or malformed certificate) for anything else.
    """

    name: str

    def field(self, request: CheckInput) -> str: ...

    def leaf(self, field: str) -> x509.Certificate: ...
