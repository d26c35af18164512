"""Verifying and indexing a large CRL in a child process, so no Check waits for it.

Verifying a CRL walks every entry in Python (its serial, date, reason and critical extensions):
about 4 s for a million entries. On the event loop that would stop every Check of every client
for as long, and a thread would hold the GIL against them just the same. So a CRL of more than
`inline_max` bytes is handed to `python -m authz.revocation.crl_worker`, one child per CRL, one
at a time: it verifies exactly what `verify_crl` verifies (same function) and sends back the
compact index's buffers. The loop only writes the body to a pipe and reads the buffers back;
the old index is served until the new one is in place (crl_source.py).

The child is killed at `timeout` and at shutdown. What it sends is read as data only — a JSON
header line and raw buffers — never unpickled: a CRL that exploited a parser bug in the child
could at worst make its own index wrong, not run code in the service.

    parent → child: a JSON line (issuer DER, now, rules) then the CRL's bytes
    child → parent: a JSON line ({"ok": header} or {"failure", "detail"}) then the buffers,
                    the last one preceded by its length as a line
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import mmap
import resource
import shutil
import signal
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.core.revocation import RevocationError, RevocationFailure
from authz.revocation.crl import verify_crl
from authz.revocation.crl_index import Buffer, CrlIndex, RevokedSerials
from authz.revocation.fetch import Body

INLINE_MAX_BYTES = 64 * 1024
"""CRLs up to this size (about 1 300 entries, a few ms) are verified on the loop: a child's
start costs more than that."""
NICENESS = 10
"""The child yields the CPU to the service's event loop when both want it: Checks first, the
refresh in the CPU they leave (the CRL held is served meanwhile)."""
VERIFY_TIMEOUT = 120.0
"""A child still verifying after this long is killed and the CRL counts as failed."""
_CHILD = (
    "import os, runpy; "
    f"os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), {NICENESS})); "
    "runpy.run_module('authz.revocation.crl_worker', run_name='__main__')"
)
_NICE = shutil.which("nice")
"""With coreutils' nice, the child yields from its first instruction, its interpreter's start
included; without, from the first line it runs."""
KILLED = (
    "killed — if not at shutdown, by the out-of-memory killer: the memory limit must hold the "
    "verifier's peak as well as the service (about 230 MB for a million entries)"
)
_CHUNK = 1024 * 1024
_LINE_LIMIT = 1024 * 1024

log = logging.getLogger("authz.crl")


class CrlVerifier:
    """Verifies CRLs: small ones inline, large ones in a child process, one child at a time."""

    def __init__(self, inline_max: int = INLINE_MAX_BYTES, timeout: float = VERIFY_TIMEOUT) -> None:
        self._inline_max = inline_max
        self.timeout = timeout
        self._one_at_a_time = asyncio.Semaphore(1)
        self._children: set[asyncio.subprocess.Process] = set()

    async def verify(
        self,
        body: Body,
        issuer: x509.Certificate,
        now: dt.datetime,
        *,
        skew: dt.timedelta,
        max_age: dt.timedelta,
        allow_sha1: bool,
        url: str = "",
    ) -> CrlIndex:
        if len(body) <= self._inline_max:
            data = bytes(body)
            return verify_crl(data, issuer, now, skew=skew, max_age=max_age, allow_sha1=allow_sha1)
        request = {
            "issuer": base64.b64encode(issuer.public_bytes(serialization.Encoding.DER)).decode(),
            "now": now.isoformat(),
            "skew": skew.total_seconds(),
            "max_age": max_age.total_seconds(),
            "allow_sha1": allow_sha1,
        }
        async with self._one_at_a_time:
            return await self._in_child(request, body, url)

    async def _in_child(self, request: dict[str, object], body: Body, url: str) -> CrlIndex:
        started = time.monotonic()
        nice = (_NICE, "-n", str(NICENESS)) if _NICE else ()
        child = await asyncio.create_subprocess_exec(
            *nice, sys.executable, "-c", _CHILD,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=_LINE_LIMIT,
        )  # fmt: skip
        self._children.add(child)
        log.info(
            "verifying a CRL off the event loop",
            extra={"crl": url, "bytes": len(body), "verifier_pid": child.pid},
        )
        try:
            async with asyncio.timeout(self.timeout):
                index, report = await _exchange(child, request, body)
                await child.wait()  # it exits once it has written
        except TimeoutError:
            raise RevocationError(
                RevocationFailure.TIMEOUT, f"verifying the CRL took more than {self.timeout} s"
            ) from None
        finally:
            self._children.discard(child)
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        log.info(
            "CRL verified",
            extra={
                "crl": url,
                "entries": len(index.revoked),
                "index_bytes": index.revoked.nbytes(),
                "seconds": round(time.monotonic() - started, 3),
                "verifier_pid": child.pid,
                "verifier_max_rss_kib": report.get("max_rss_kib"),
            },
        )
        return index

    @property
    def pids(self) -> list[int]:
        """The children verifying now."""
        return [child.pid for child in self._children]

    async def close(self) -> None:
        """Kill any child still verifying (at shutdown)."""
        for child in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        for child in list(self._children):
            await child.wait()


async def _exchange(
    child: asyncio.subprocess.Process, request: dict[str, object], body: Body
) -> tuple[CrlIndex, dict[str, object]]:
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    errors = asyncio.ensure_future(child.stderr.read(64 * 1024))
    try:
        await _send(child.stdin, request, body)
        line = await child.stdout.readline()
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            await child.wait()
            why = _last_line(await errors)
            if child.returncode == -signal.SIGKILL:
                why = KILLED
            raise RevocationError(
                RevocationFailure.UNPARSABLE, f"the CRL verifier exited ({child.returncode}): {why}"
            )
        if "failure" in answer:
            raise RevocationError(RevocationFailure(answer["failure"]), str(answer["detail"]))
        header = answer["ok"]
        buffers: list[Buffer] = []
        for size in RevokedSerials.part_sizes(header):
            if size is None:
                size = int(await child.stdout.readline())
            buffers.append(await _read_exactly(child.stdout, size))
        return CrlIndex.from_parts(header, buffers), answer.get("report", {})
    except (ValueError, KeyError, TypeError, asyncio.IncompleteReadError) as error:
        raise RevocationError(
            RevocationFailure.UNPARSABLE, f"the CRL verifier's answer is unreadable ({error})"
        ) from None
    finally:
        errors.cancel()


async def _send(stdin: asyncio.StreamWriter, request: dict[str, object], body: Body) -> None:
    """In chunks, so the loop never copies the whole body at once into the pipe's buffer."""
    try:
        stdin.write(json.dumps(request).encode() + b"\n")
        view = memoryview(body)
        for start in range(0, len(view), _CHUNK):
            stdin.write(view[start : start + _CHUNK])
            await stdin.drain()
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child exited early; its answer (or its absence) says why


async def _read_exactly(stream: asyncio.StreamReader, size: int) -> Buffer:
    """`size` bytes, a chunk at a time, into anonymous mapped memory (never tens of MB copied
    or zeroed at once)."""
    if size == 0:
        return b""
    mapped = mmap.mmap(-1, size)
    done = 0
    while done < size:
        chunk = await stream.read(min(_CHUNK, size - done))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", size)
        mapped[done : done + len(chunk)] = chunk
        done += len(chunk)
    return memoryview(mapped).toreadonly()


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message"


# -- the child ---------------------------------------------------------------------------------


def _child() -> None:
    """Read one request and CRL from stdin, answer on stdout."""
    source = sys.stdin.buffer
    out = sys.stdout.buffer
    request = json.loads(source.readline())
    body = source.read()
    issuer = x509.load_der_x509_certificate(base64.b64decode(request["issuer"]))
    try:
        index = verify_crl(
            body,
            issuer,
            dt.datetime.fromisoformat(request["now"]),
            skew=dt.timedelta(seconds=request["skew"]),
            max_age=dt.timedelta(seconds=request["max_age"]),
            allow_sha1=request["allow_sha1"],
        )
    except RevocationError as error:
        out.write(json.dumps({"failure": error.failure.value, "detail": error.detail}).encode())
        out.write(b"\n")
        return
    except Exception as error:  # cryptography refusing a hostile field: the CRL's failure
        detail = f"the CRL cannot be verified ({type(error).__name__}: {error})"
        out.write(json.dumps({"failure": "unparsable", "detail": detail}).encode() + b"\n")
        return
    header, buffers = index.to_parts()
    report = {"max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    out.write(json.dumps({"ok": header, "report": report}).encode() + b"\n")
    *fixed, last = buffers
    for buffer in fixed:
        out.write(buffer)
    out.write(f"{len(last)}\n".encode())
    out.write(last)
    out.flush()


if __name__ == "__main__":
    _child()
