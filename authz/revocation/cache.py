"""A bounded, expiring cache with single-flight loads and refresh-ahead.

- At most `max_entries` (least recently used evicted first).
- Concurrent lookups of a missing key share one load (one request at the responder).
- A hit past `REFRESH_AT` of its lifetime starts one background reload and is served meanwhile,
  so hot keys never wait. A reload that fails does not replace a still-valid definitive entry.
- A caller may let an expired entry be served while its reload is still in flight (`hold`):
  a CRL whose refresh takes longer than the rest of its life.
- A caller that is cancelled (Envoy gave up) does not cancel the shared load.

With a `Codec`, each entry is one bytes object — its times packed beside the codec's bytes — so a
million answers fit in a few hundred MB; the last `DECODED_MEMO` entries decoded are kept decoded,
so a returning client does not pay for decoding.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from authz.core.revocation import Lookup

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

REFRESH_AT = 0.8
log = logging.getLogger("authz.cache")

# Packed entries: expiry, refresh and last use in ticks since the cache was made, and whether the
# value is an answer. Expiry and refresh round down (never later than asked); last use is kept to
# USE_GRANULARITY, enough for prefetch windows of minutes.
_TIMES = struct.Struct("<IIIB")
TICKS_PER_SECOND = 10
USE_GRANULARITY = 1.0
DECODED_MEMO = 4096


@dataclass(frozen=True, slots=True)
class Loaded(Generic[V]):
    """What a loader returns: the value, how long it may be kept, whether it is an answer, and
    the signed bytes (OCSP response, CRL) it was verified from. This cache keeps only the value;
    the bytes are what a store under it would keep, to verify again when read back."""

    value: V
    ttl: float
    definitive: bool = True
    signed: bytes | memoryview = b""


KC = TypeVar("KC", contravariant=True)


class Codec(Protocol[KC, V]):
    """Turns a cached value into compact bytes and back (the key is given, so what it holds
    need not be repeated in every entry)."""

    def pack(self, key: KC, value: V) -> bytes: ...

    def unpack(self, key: KC, packed: bytes) -> V: ...


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float
    refresh_at: float
    definitive: bool
    used_at: float


class SingleFlightCache(Generic[K, V]):
    def __init__(
        self,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        codec: Codec[K, V] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._codec = codec
        self._epoch = clock()
        # Insertion order is recency order: a hit moves its entry to the end.
        self._entries: dict[K, _Entry[V] | bytes] = {}
        self._decoded: dict[int, tuple[bytes, V]] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        key: K,
        load: Callable[[], Awaitable[Loaded[V]]],
        hold: Callable[[V, float], bool] | None = None,
    ) -> tuple[V, Lookup]:
        """`hold(value, late)`: whether a definitive value `late` seconds past its expiry may
        still be served while its reload is in flight (rather than the caller waiting for it)."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if isinstance(entry, bytes):
                expires, refresh, used, definitive = _TIMES.unpack_from(entry)
                ticks = (now - self._epoch) * TICKS_PER_SECOND
                fresh, due = expires > ticks, ticks >= refresh
                if fresh and ticks - used >= USE_GRANULARITY * TICKS_PER_SECOND:
                    used = self._ticks(now)
                    entry = _TIMES.pack(expires, refresh, used, definitive) + entry[_TIMES.size :]
            else:
                fresh, due = entry.expires_at > now, now >= entry.refresh_at
                entry.used_at = now
            del self._entries[key]
            if fresh:
                self._entries[key] = entry  # the most recently used, last
                value = self._value(key, entry)
                if due and key not in self._loading:
                    self._start_load(key, load)
                    return value, Lookup.STALE_REFRESH
                return value, Lookup.HIT
            if hold is not None and key in self._loading:
                expires_at, _, _, definitive = self._times(entry)
                value = self._value(key, entry)
                if definitive and hold(value, now - expires_at):
                    self._entries[key] = entry  # until the reload replaces it
                    return value, Lookup.STALE_REFRESH
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
            expires_at, refresh_at, used_at, definitive = self._times(entry)
            if (
                definitive
                and refresh_at <= now + ahead
                and now < expires_at
                and now - used_at <= used_within + (USE_GRANULARITY if self._codec else 0.0)
                and key not in self._loading
            ):
                found.append((key, self._value(key, entry)))
                if len(found) >= limit:
                    break
        return found

    def peek(self, key: K) -> V | None:
        """The value held for `key`, even past its refresh time, without counting as a use."""
        entry = self._entries.get(key)
        return None if entry is None else self._value(key, entry)

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

    # -- entries: objects, or packed bytes with a codec -----------------------------------------

    def _times(self, entry: _Entry[V] | bytes) -> tuple[float, float, float, bool]:
        if isinstance(entry, _Entry):
            return entry.expires_at, entry.refresh_at, entry.used_at, entry.definitive
        expires, refresh, used, definitive = _TIMES.unpack_from(entry)
        epoch = self._epoch
        tick = 1 / TICKS_PER_SECOND
        return epoch + expires * tick, epoch + refresh * tick, epoch + used * tick, bool(definitive)

    def _value(self, key: K, entry: _Entry[V] | bytes) -> V:
        if isinstance(entry, _Entry):
            return entry.value
        assert self._codec is not None
        memo = self._decoded.get(id(entry))
        if memo is not None and memo[0] is entry:
            return memo[1]
        value = self._codec.unpack(key, entry[_TIMES.size :])
        if len(self._decoded) >= DECODED_MEMO:
            self._decoded.clear()  # bounded; returning clients refill it at once
        self._decoded[id(entry)] = (entry, value)
        return value

    def _ticks(self, when: float) -> int:
        """Whole ticks since the epoch, rounded down (a time a hair under a tick boundary by
        floating-point error counts as on it)."""
        ticks = math.floor((when - self._epoch) * TICKS_PER_SECOND + 1e-6)
        return min(0xFFFFFFFF, max(0, ticks))

    def _make(
        self, key: K, loaded: Loaded[V], expires_at: float, refresh_at: float, used_at: float
    ) -> _Entry[V] | bytes:
        if self._codec is None:
            return _Entry(loaded.value, expires_at, refresh_at, loaded.definitive, used_at)
        times = _TIMES.pack(
            self._ticks(expires_at),
            self._ticks(refresh_at),
            self._ticks(used_at),
            loaded.definitive,
        )
        return times + self._codec.pack(key, loaded.value)

    # -- loading ---------------------------------------------------------------------------------

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
        if not loaded.definitive and current is not None:
            expires_at, _, used_at, definitive = self._times(current)
            if definitive and expires_at > now:
                # Keep serving the good answer; try again after the failure's ttl.
                self._entries[key] = self._retry_at(key, current, now + loaded.ttl)
                return
        if loaded.ttl <= 0:
            self._entries.pop(key, None)
            return
        # Failures are not refreshed ahead: they simply expire and the next lookup retries.
        refresh_in = REFRESH_AT * loaded.ttl if loaded.definitive else loaded.ttl
        used_at = self._times(current)[2] if current is not None else now
        self._entries.pop(key, None)
        self._entries[key] = self._make(key, loaded, now + loaded.ttl, now + refresh_in, used_at)
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]

    def _retry_at(self, key: K, entry: _Entry[V] | bytes, when: float) -> _Entry[V] | bytes:
        if isinstance(entry, _Entry):
            entry.refresh_at = when
            return entry
        expires, _, used, definitive = _TIMES.unpack_from(entry)
        refresh = self._ticks(when)
        return _TIMES.pack(expires, refresh, used, definitive) + entry[_TIMES.size :]
