"""Readiness: one answer for /readyz and the gRPC health service.

starting → serving → draining. Ready only while serving: files loaded, gRPC accepting, not
shutting down. Draining turns /readyz to 503 before the gRPC server stops, so Kubernetes stops
routing to the pod while in-flight Checks finish.
"""

from __future__ import annotations

from enum import StrEnum

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

HEALTH_SERVICES = ("", "envoy.service.auth.v3.Authorization")


class Phase(StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


class Readiness:
    def __init__(self, health: HealthServicer) -> None:
        self.health = health
        self.phase = Phase.STARTING

    @property
    def ready(self) -> bool:
        return self.phase is Phase.SERVING

    async def serving(self) -> None:
        self.phase = Phase.SERVING
        for name in HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def draining(self) -> None:
        self.phase = Phase.DRAINING
        await self.health.enter_graceful_shutdown()
