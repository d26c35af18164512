"""Entries packed with a codec: what only they do."""

from __future__ import annotations

import asyncio

from authz.core.revocation import Lookup
from authz.revocation.cache import SingleFlightCache
from tests.unit.test_cache import Clock, IntCodec, Loader


async def test_packed_entries_remember_use_to_the_second_for_prefetch() -> None:
    """Packed entries record their last use at most once a second (a hit does not rewrite its
    entry more often); prefetch still finds what was used within its window."""
    clock = Clock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(10, clock, IntCodec())
    await cache.get("k", Loader(ttl=100))
    clock.now += 85  # past 80 % of the life
    assert [key for key, _ in cache.due(used_within=90, limit=10)] == ["k"]
    assert cache.due(used_within=60, limit=10) == []
    await cache.get("k", Loader(ttl=100))  # a use now (it also starts a refresh)
    await asyncio.sleep(0.01)
    clock.now += 85
    assert [key for key, _ in cache.due(used_within=90, limit=10)] == ["k"]


async def test_a_returning_key_gets_the_same_decoded_value() -> None:
    decoded: list[int] = []

    class CountingCodec(IntCodec):
        def unpack(self, key: str, packed: bytes) -> int:
            decoded.append(1)
            return super().unpack(key, packed)

    cache: SingleFlightCache[str, int] = SingleFlightCache(10, Clock(), CountingCodec())
    await cache.get("k", Loader())
    for _ in range(5):
        assert await cache.get("k", Loader()) == (1, Lookup.HIT)
    assert len(decoded) == 1
