"""The HTTP transports: Envoy's HTTP ext_authz and forward-auth, on one listener's code."""
