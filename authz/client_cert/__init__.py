"""Certificate sources besides Envoy's peer field (the core's default): the client certificate
from `x-forwarded-client-cert`, injection-proof. They implement `authz.core.source`; pure."""
