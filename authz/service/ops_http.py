"""The small HTTP side server: /metrics for Prometheus, /healthz and /readyz for Kubernetes."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def make_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    generation: Callable[[], str | None] = lambda: "0",
) -> web.Application:
    """`ready` is true while the gRPC server serves with a loaded configuration, not draining;
    `generation` is the block list's, or None when it cannot be vouched for (workers that
    disagree)."""

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def blocks_generation(_: web.Request) -> web.Response:
        # What Envoy's verdict cache asks (every half second per worker): when it changes, the
        # cache drops what it replays; when it cannot be had, the cache replays nothing.
        current = generation()
        if current is None:
            return web.Response(status=503, text="unsettled\n")
        return web.Response(text=current, headers={"cache-control": "no-store"})

    app = web.Application()
    app.router.add_get("/blocks/generation", blocks_generation)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start(app: web.Application, listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    return runner
