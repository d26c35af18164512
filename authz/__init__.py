"""mtls-authz: an Envoy ext_authz service for mutual TLS client certificates."""

__version__ = "0.1.0"
