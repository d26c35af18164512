from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from authz.service.readiness import HEALTH_SERVICES, Phase, Readiness


async def health_status(health: HealthServicer, service: str) -> int:
    class Context:
        def set_code(self, code: object) -> None:
            self.code = code

    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), Context())
    return int(reply.status)


async def test_ready_only_while_serving_and_health_agrees() -> None:
    health = HealthServicer()
    readiness = Readiness(health)
    assert readiness.phase is Phase.STARTING and not readiness.ready

    await readiness.serving()
    assert readiness.ready
    for service in HEALTH_SERVICES:
        assert await health_status(health, service) == health_pb2.HealthCheckResponse.SERVING

    await readiness.draining()
    assert not readiness.ready
    for service in HEALTH_SERVICES:
        assert await health_status(health, service) == health_pb2.HealthCheckResponse.NOT_SERVING
