"""`serve --workers N`: N worker processes on one gRPC port (SO_REUSEPORT), supervised.

The supervisor serves /metrics (aggregated across workers with prometheus-client's multiprocess
mode), /healthz and /readyz; restarts a worker that dies; forwards SIGHUP; on SIGTERM marks
itself not ready, lets every worker drain, and exits 0. Each worker is `mtls-authz serve` itself,
with the metrics server off and its readiness written as a file the supervisor reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

from authz.service import ops_http as http
from authz.service.settings import Settings

log = logging.getLogger("authz.workers")

WORKER_ENV = "MTLS_AUTHZ_WORKER_DIR"
RESTART_DELAY = 1.0


def ready_file(directory: Path, pid: int) -> Path:
    return directory / f"ready-{pid}"


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str], workers: int) -> None:
        self.settings = settings
        # The worker's own command line: the same flags, then overrides (later flags win).
        self.argv = [sys.executable, "-m", "authz", *argv, "--workers", "1", "--metrics-listen="]
        self.count = workers
        self.directory = Path(tempfile.mkdtemp(prefix="mtls-authz-workers-"))
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False

    def generation(self) -> str | None:
        """The workers' block list generation when they all hold the same list, else None."""
        seen = set()
        for pid in self.processes:
            try:
                seen.add(generation_file(self.directory, pid).read_text())
            except OSError:
                return None
        return seen.pop() if len(seen) == 1 else None

    def ready(self) -> bool:
        return (
            not self.stopping
            and len(self.processes) == self.count
            and all(ready_file(self.directory, pid).exists() for pid in self.processes)
        )

    async def start_worker(self, index: int) -> None:
        env = {
            **os.environ,
            WORKER_ENV: str(self.directory),
            "PROMETHEUS_MULTIPROC_DIR": str(self.directory),
        }
        process = await asyncio.create_subprocess_exec(
            *self.argv, env=env, stdin=asyncio.subprocess.DEVNULL
        )
        self.processes[process.pid] = process
        log.info("worker started", extra={"worker": index, "pid": process.pid})
        asyncio.get_running_loop().create_task(self.watch(index, process))

    async def watch(self, index: int, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self.processes.pop(process.pid, None)
        multiprocess.mark_process_dead(process.pid, str(self.directory))  # type: ignore[no-untyped-call]
        ready_file(self.directory, process.pid).unlink(missing_ok=True)
        generation_file(self.directory, process.pid).unlink(missing_ok=True)
        if self.stopping:
            return
        log.error(
            "worker exited; restarting", extra={"worker": index, "pid": process.pid, "code": code}
        )
        await asyncio.sleep(RESTART_DELAY)
        if not self.stopping:
            await self.start_worker(index)

    def signal_all(self, sig: signal.Signals) -> None:
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    async def run(self) -> int:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        runner = None
        if self.settings.metrics_listen:
            runner = await http.start(
                http.make_app(registry, self.ready, self.generation), self.settings.metrics_listen
            )
        for index in range(self.count):
            await self.start_worker(index)
        log.info("supervising", extra={"workers": self.count, "grpc_listen": self.settings.listen})

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.signal_all(signal.SIGHUP))
        await stop.wait()

        self.stopping = True
        log.info("draining workers", extra={"grace_seconds": self.settings.shutdown_grace})
        self.signal_all(signal.SIGTERM)
        waits = [p.wait() for p in self.processes.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), self.settings.shutdown_grace + 5)
        except TimeoutError:
            self.signal_all(signal.SIGKILL)
        if runner is not None:
            await runner.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)
        log.info("stopped")
        return 0


def generation_file(directory: Path, pid: int) -> Path:
    return directory / f"blocks-{pid}"


def mark_generation(pid: int, generation: str) -> None:
    """Called in a worker: its block list's generation, for the supervisor's endpoint."""
    directory = os.environ.get(WORKER_ENV)
    if directory:
        path = generation_file(Path(directory), pid)
        temporary = path.with_suffix(".new")
        temporary.write_text(generation)
        temporary.replace(path)


def mark_ready(pid: int, ready: bool) -> None:
    """Called in a worker: tell the supervisor (if any) whether this worker serves."""
    directory = os.environ.get(WORKER_ENV)
    if not directory:
        return
    path = ready_file(Path(directory), pid)
    if ready:
        path.touch()
    else:
        path.unlink(missing_ok=True)
