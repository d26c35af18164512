"""Prefetch: refresh answers that clients are still using before they are due, so a steady
client population never waits on a responder — even clients that were not seen in the last 20 %
of their answer's life (refresh-ahead covers those that were).

Bounded: at most `rate` refreshes per second per responder (token bucket), and only answers
used within `used_within` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from authz.revocation.cache import Loaded, SingleFlightCache
from authz.revocation.fetch import responder_label

log = logging.getLogger("authz.prefetch")

# Per scan, per cache: enough for any realistic steady population, bounded for the event loop.
SCAN_LIMIT = 2000


@dataclass(frozen=True)
class Target:
    """One cache to keep warm: how to rebuild an entry's loader, and which responder it hits."""

    cache: SingleFlightCache[Any, Any]
    loader: Callable[[Any, Any], Callable[[], Awaitable[Loaded[Any]]] | None]
    responder: Callable[[Any], str]


class TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate, self.tokens, self.clock = rate, rate, clock
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Prefetcher:
    def __init__(
        self,
        targets: Callable[[], Sequence[Target]],
        used_within: float,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self._targets = targets
        self._interval = interval
        self._used_within = used_within
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def run_once(self) -> int:
        """Start the refreshes that are due and allowed; returns how many started."""
        started = 0
        for target in self._targets():
            # Look one scan ahead, so an answer due between two scans is not missed.
            for key, value in target.cache.due(self._used_within, SCAN_LIMIT, self._interval):
                label = responder_label(target.responder(value))
                bucket = self._buckets.setdefault(label, TokenBucket(self._rate, self._clock))
                if not bucket.take():
                    continue  # this responder's budget is spent; the next scan tries again
                load = target.loader(key, value)
                if load is not None and target.cache.refresh(key, load):
                    started += 1
        return started

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                started = self.run_once()
            except Exception:  # a bug here must not stop prefetching for good
                log.exception("prefetch scan failed")
                continue
            if started:
                log.debug("prefetching", extra={"refreshes": started})
