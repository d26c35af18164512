"""A second-level store of signed revocation answers shared by every replica (Redis, Valkey),
under each process's own cache: what one replica fetched, the others read instead of asking the
responder; a replica that restarts finds its clients' answers there.

Trust: the store only ever holds the signed answer as the responder sent it (OCSP response DER,
CRL DER), and what is read back is verified exactly as a fresh answer is, then used only while it
is in the first REFRESH_AT of its life, counted from its own signed thisUpdate (bounded by
`max_age`). A writer to the store can never make a certificate good or unrevoked; at most it can
replay an answer that is still valid by every rule applied to a fresh one. Anything else read
(garbage, another key's answer, another signer, an old answer) is refused, counted, and replaced
by the next fetch.

Coalescing: before asking the responder, a replica takes a short lock in the store (SET NX PX);
the others wait for its answer (polling), then read it. A waiter stops waiting in time to ask the
responder itself, store the answer and release within `deadline` seconds of the Check's start
(`revocation_deadline`, under Envoy's ext_authz timeout): a lock that is never released — a
replica that died, or a writer to the store holding it — costs a Check at most that.

The store is never a reason to refuse: each operation is bounded by `timeout`; failures open a
breaker that skips the store for a while; every transition is logged once and counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from authz.revocation.fetch import Body, CircuitBreaker

A = TypeVar("A")
T = TypeVar("T")

REFRESH_AT = 0.8
"""A stored answer past this fraction of its life is refreshed from the responder, not read."""
POLL_FIRST = 0.01
POLL_MOST = 0.1
"""Waiting for another replica's answer: polls start 10 ms apart and back off to 100 ms."""
PROBE_TIMEOUTS = 4
"""A probe may take this many operation timeouts (a first connection, TLS included)."""
BREAKER_FAILURES = 3
BREAKER_OPEN_SECONDS = 5.0

log = logging.getLogger("authz.shared_cache")


class Store(Protocol):
    """What the shared cache needs of a key-value server."""

    async def ping(self) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: Body, ttl: float) -> None: ...

    async def claim(self, key: str, ttl: float) -> bool:
        """Take the lock `key` for `ttl` seconds unless someone holds it (SET NX PX)."""
        ...

    async def watch(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        """`key`'s value and whether `lock` is held, in one round trip."""
        ...

    async def release(self, key: str) -> None: ...

    async def close(self) -> None: ...


class SharedObserver(Protocol):
    def observe_shared_cache(self, result: str) -> None:
        """hit, miss, refused (read, does not verify), stale (verifies, too old to serve),
        written, lock_wait, lock_wait_hit, error."""
        ...

    def observe_shared_cache_up(self, up: bool) -> None: ...


class Claim(Enum):
    OURS = "ours"
    THEIRS = "theirs"
    NONE = "none"
    """The store could not be asked: fetch without coordinating."""


@dataclass(frozen=True, slots=True)
class SharedKey(Generic[A]):
    """One answer's place in the store, and the source's rules for what it may serve."""

    key: str
    fresh: Callable[[A], bool]
    """Whether a verified answer read back may be served instead of asking the responder."""
    ttl: Callable[[A], float]
    """How long the store may keep a verified answer (its own validity under our rules)."""
    max_bytes: float = math.inf
    """Larger signed answers are not stored."""


_FAILED = object()


class Unavailable(Enum):
    UNAVAILABLE = "unavailable"


UNAVAILABLE = Unavailable.UNAVAILABLE


class SharedAnswers:
    def __init__(
        self,
        store: Store,
        timeout: float,
        wait: float,
        observer: SharedObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline: float = math.inf,
    ) -> None:
        """`wait`: the longest one fetch of any source may take (how long a lock is held);
        `deadline`: the longest one Check's lookup may take in all."""
        self._store = store
        self._timeout = timeout
        self._wait = wait
        self._deadline = deadline
        self._observer = observer
        self._clock = clock
        self._breaker = CircuitBreaker(BREAKER_FAILURES, BREAKER_OPEN_SECONDS, clock)
        self._up = True

    async def probe(self) -> bool:
        """Ask the store whether it answers (at start and on reload), and say so: the metric
        and, on a change, one log line. Never a reason to refuse, nor to be not ready."""
        try:
            await _bounded(self._store.ping, self._timeout * PROBE_TIMEOUTS)
        except Exception as error:
            if self._up:
                self._transition(False, error)
            elif self._observer is not None:
                self._observer.observe_shared_cache_up(False)
            return False
        if not self._up:
            self._transition(True, None)
        elif self._observer is not None:
            self._observer.observe_shared_cache_up(True)
        return True

    async def find(
        self, key: SharedKey[A], verify: Callable[[Body], Awaitable[A]]
    ) -> tuple[A, bytes] | Unavailable | None:
        """A stored answer that verifies and is fresh; None (absent or not usable); or
        UNAVAILABLE: the store failed, and this answer should not wait on it again."""
        body = await self._call(lambda: self._store.get(key.key))
        if body is _FAILED:
            return UNAVAILABLE
        if body is None:
            self._count("miss")
            return None
        assert isinstance(body, bytes)
        found, verdict = await self._judge(body, key, verify)
        self._count(verdict)
        return found

    async def claim(self, key: SharedKey[A]) -> Claim:
        taken = await self._call(lambda: self._store.claim(_lock(key), self._wait + 1.0))
        if taken is _FAILED:
            return Claim.NONE
        return Claim.OURS if taken else Claim.THEIRS

    async def recheck(
        self, key: SharedKey[A], verify: Callable[[Body], Awaitable[A]]
    ) -> tuple[A, bytes] | None:
        """Just after taking the lock: another replica may have stored its answer and released
        the lock between our read and our claim."""
        found = await self._read_again(key, verify)
        if found is not None:
            self._count("hit")
        return found

    def clock(self) -> float:
        return self._clock()

    def wait_until(self, started: float, fetch_timeout: float) -> float:
        """When waiting for another replica must end, for a lookup that began at `started`
        (this clock): in time to fetch itself (`fetch_timeout`), store the answer and release
        the lock within the deadline; never later than one fetch of the other replica."""
        reserve = fetch_timeout + 2 * self._timeout
        return min(self._clock() + self._wait, started + self._deadline - reserve)

    async def wait_for(
        self, key: SharedKey[A], verify: Callable[[Body], Awaitable[A]], until: float = math.inf
    ) -> tuple[A, bytes] | None:
        """Another replica is asking the responder: wait for its answer, until `until` at most
        (and never longer than `wait`)."""
        self._count("lock_wait")
        deadline = min(until, self._clock() + self._wait)
        pause = POLL_FIRST
        while self._clock() < deadline:
            await asyncio.sleep(pause)
            pause = min(POLL_MOST, pause * 1.5)
            seen = await self._call(lambda: self._store.watch(key.key, _lock(key)))
            if not isinstance(seen, tuple):
                return None  # the store failed: ask the responder
            body, held = seen
            if body is not None:
                found = await self._usable(body, key, verify)
                if found is not None:
                    self._count("lock_wait_hit")
                    return found
            if not held:
                # Released: its answer is there now, or it had none (its responder failed).
                return await self._read_again(key, verify)
        return None

    async def _read_again(
        self, key: SharedKey[A], verify: Callable[[Body], Awaitable[A]]
    ) -> tuple[A, bytes] | None:
        body = await self._call(lambda: self._store.get(key.key))
        return await self._usable(body, key, verify) if isinstance(body, bytes) else None

    async def share(self, key: SharedKey[A], body: Body, answer: A) -> None:
        ttl = key.ttl(answer)
        if ttl <= 0 or len(body) > key.max_bytes:
            return
        if await self._call(lambda: self._store.put(key.key, body, ttl)) is not _FAILED:
            self._count("written")

    async def release(self, key: SharedKey[A]) -> None:
        await self._call(lambda: self._store.release(_lock(key)))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._store.close(), self._timeout)
        except Exception:  # closing at shutdown: nothing left to protect
            log.debug("closing the shared revocation cache failed", exc_info=True)

    async def _usable(
        self, body: bytes, key: SharedKey[A], verify: Callable[[Body], Awaitable[A]]
    ) -> tuple[A, bytes] | None:
        return (await self._judge(body, key, verify))[0]

    async def _judge(
        self, body: bytes, key: SharedKey[A], verify: Callable[[Body], Awaitable[A]]
    ) -> tuple[tuple[A, bytes] | None, str]:
        try:
            answer = await verify(body)
        except Exception:
            return None, "refused"
        return ((answer, body), "hit") if key.fresh(answer) else (None, "stale")

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T | object:
        """One bounded operation; _FAILED on any error or timeout, or while the breaker is open."""
        if not self._breaker.allow():
            return _FAILED
        try:
            result = await _bounded(operation, self._timeout)
        except Exception as error:
            self._breaker.record(False)
            self._count("error")
            if self._up and not self._breaker.allow():
                self._transition(False, error)
            return _FAILED
        self._breaker.record(True)
        if not self._up:
            self._transition(True, None)
        return result

    def _transition(self, up: bool, error: Exception | None) -> None:
        self._up = up
        if self._observer is not None:
            self._observer.observe_shared_cache_up(up)
        if up:
            log.warning("shared revocation cache reachable again; using it")
        else:
            log.warning(
                "shared revocation cache unavailable; asking the responders directly",
                extra={"error": f"{type(error).__name__}: {error}"},
            )

    def _count(self, result: str) -> None:
        if self._observer is not None:
            self._observer.observe_shared_cache(result)


async def _bounded(operation: Callable[[], Awaitable[T]], seconds: float) -> T:
    """`operation`'s result, or TimeoutError after `seconds` — without waiting for the
    abandoned operation to wind down (a client cleaning up a hung connection can take as long
    again); it is cancelled and finishes in the background."""
    task = asyncio.ensure_future(operation())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_discard_outcome)
        raise TimeoutError(f"no answer in {seconds} s")
    return task.result()


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


def _lock(key: SharedKey[A]) -> str:
    """In the answer's own hash slot (the answer's key, whole, is the lock's hash tag), under
    the same prefix (one ACL key pattern, `~mtls-authz:*`, covers both)."""
    return "mtls-authz:v1:lock:{" + key.key + "}"
