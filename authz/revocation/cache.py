"""A bounded, expiring cache with single-flight loads and refresh-ahead.

- At most `max_entries` (least recently used evicted first).
- Concurrent lookups of a missing key share one load (one request at the responder).
- A hit past `REFRESH_AT` of its lifetime starts one background reload and is served meanwhile,
  so hot keys never wait. A reload that fails does not replace a still-valid definitive entry.
- A caller that is cancelled (Envoy gave up) does not cancel the shared load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

REFRESH_AT = 0.8
log = logging.getLogger("authz.cache")


class Lookup(StrEnum):
    HIT = "hit"
    MISS = "miss"
    COALESCED = "coalesced"
    STALE_REFRESH = "stale_refresh"


@dataclass(frozen=True, slots=True)
class Loaded(Generic[V]):
    """What a loader returns: the value, how long it may be kept, whether it is an answer, and
    the signed bytes (OCSP response, CRL) it was verified from. This cache keeps only the value;
    the bytes are what a store under it would keep, to verify again when read back."""

    value: V
    ttl: float
    definitive: bool = True
    signed: bytes = b""


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float
    refresh_at: float
    definitive: bool
    used_at: float


class SingleFlightCache(Generic[K, V]):
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: K, load: Callable[[], Awaitable[Loaded[V]]]) -> tuple[V, Lookup]:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.expires_at > now:
                self._entries.move_to_end(key)
                entry.used_at = now
                if now >= entry.refresh_at and key not in self._loading:
                    self._start_load(key, load)
                    return entry.value, Lookup.STALE_REFRESH
                return entry.value, Lookup.HIT
            del self._entries[key]
        task = self._loading.get(key)
        lookup = Lookup.COALESCED
        if task is None:
            task = self._start_load(key, load)
            lookup = Lookup.MISS
        return await asyncio.shield(task), lookup

    def due(self, used_within: float, limit: int, ahead: float = 0.0) -> list[tuple[K, V]]:
        """Entries past their refresh time (or within `ahead` seconds of it), still valid, used
        in the last `used_within` seconds and not being loaded: what a prefetcher should refresh
        before anyone waits on it."""
        now = self._clock()
        found: list[tuple[K, V]] = []
        for key, entry in self._entries.items():
            if (
                entry.definitive
                and entry.refresh_at <= now + ahead
                and now < entry.expires_at
                and now - entry.used_at <= used_within
                and key not in self._loading
            ):
                found.append((key, entry.value))
                if len(found) >= limit:
                    break
        return found

    def refresh(self, key: K, load: Callable[[], Awaitable[Loaded[V]]]) -> bool:
        """Reload `key` in the background (unless already loading); the old value is served."""
        if key in self._loading:
            return False
        self._start_load(key, load)
        return True

    def discard(self, keep: Callable[[K], bool]) -> int:
        """Drop every entry whose key `keep` rejects; returns how many went."""
        doomed = [key for key in self._entries if not keep(key)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def _start_load(self, key: K, load: Callable[[], Awaitable[Loaded[V]]]) -> asyncio.Task[V]:
        task = asyncio.get_running_loop().create_task(self._load(key, load))
        self._loading[key] = task
        task.add_done_callback(self._finished(key))
        return task

    def _finished(self, key: K) -> Callable[[asyncio.Task[V]], None]:
        def done(task: asyncio.Task[V]) -> None:
            if self._loading.get(key) is task:
                del self._loading[key]
            if not task.cancelled() and task.exception() is not None:
                log.error("cache load failed", exc_info=task.exception())

        return done

    async def _load(self, key: K, load: Callable[[], Awaitable[Loaded[V]]]) -> V:
        loaded = await load()
        self._store(key, loaded)
        return loaded.value

    def _store(self, key: K, loaded: Loaded[V]) -> None:
        now = self._clock()
        current = self._entries.get(key)
        if (
            not loaded.definitive
            and current is not None
            and current.definitive
            and current.expires_at > now
        ):
            # Keep serving the good answer; try again after the failure's ttl.
            current.refresh_at = now + loaded.ttl
            return
        if loaded.ttl <= 0:
            self._entries.pop(key, None)
            return
        # Failures are not refreshed ahead: they simply expire and the next lookup retries.
        refresh_in = REFRESH_AT * loaded.ttl if loaded.definitive else loaded.ttl
        used_at = current.used_at if current is not None else now
        self._entries[key] = _Entry(
            loaded.value, now + loaded.ttl, now + refresh_in, loaded.definitive, used_at
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
