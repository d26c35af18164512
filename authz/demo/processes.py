"""Starting and stopping the local stack's processes, with every wait bounded by a timeout."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType


class ProcessError(RuntimeError):
    pass


# Below Linux's ephemeral range (32768+), so an outgoing connection's source port cannot take a
# port between our choosing it and a server binding it.
_PORTS = range(20_000, 32_000)


# Ports handed out by this process: a caller choosing several before binding any (a stack's five
# listeners) must never get one twice. Forgotten once half the range is used.
_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 right now, chosen outside the ephemeral range, and not one this
    process was given before."""
    if len(_GIVEN) > len(_PORTS) // 2:
        _GIVEN.clear()
    for _ in range(200):
        port = random.choice(_PORTS)  # noqa: S311 - not security sensitive
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise ProcessError("no free port found")


def tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local URL
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class Process:
    """One child process, its output in `log_path`, stopped on exit from a `with` block."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self._popen is not None
        return self._popen.pid

    def poll(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready` until true; fail fast if the process exits, fail at `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.poll() is not None:
                raise ProcessError(
                    f"{self.name} exited ({self.poll()}) before {what}:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)
        raise ProcessError(f"{self.name}: not {what} after {timeout}s:\n{self.log_text()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self._popen is not None
        return self._popen.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group if it has not exited by `timeout`."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout=timeout)
        return self._popen.returncode

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
