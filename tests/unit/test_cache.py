from __future__ import annotations

import asyncio

import pytest

from authz.core.revocation import Lookup
from authz.revocation.cache import Loaded, SingleFlightCache

PACKED = False


class IntCodec:
    def pack(self, key: str, value: int) -> bytes:
        return value.to_bytes(8, "little")

    def unpack(self, key: str, packed: bytes) -> int:
        return int.from_bytes(packed, "little")


@pytest.fixture(autouse=True, params=["objects", "packed"])
def representation(request: pytest.FixtureRequest) -> None:
    """Every behaviour holds for entries kept as objects and packed with a codec."""
    global PACKED
    PACKED = request.param == "packed"


def new_cache(size: int, clock: Clock) -> SingleFlightCache[str, int]:
    return SingleFlightCache(size, clock, IntCodec() if PACKED else None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts loads; each returns the next value; optionally waits for a gate."""

    def __init__(self, ttl: float = 10.0, definitive: bool = True, first: int = 1) -> None:
        self.calls = first - 1
        self.ttl = ttl
        self.definitive = definitive
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Loaded[int]:
        self.calls += 1
        value = self.calls
        if self.gate is not None:
            await self.gate.wait()
        return Loaded(value, self.ttl, self.definitive)


async def test_miss_then_hit() -> None:
    cache = new_cache(10, Clock())
    load = Loader()
    assert await cache.get("k", load) == (1, Lookup.MISS)
    assert await cache.get("k", load) == (1, Lookup.HIT)
    assert load.calls == 1


async def test_concurrent_misses_share_one_load() -> None:
    cache = new_cache(10, Clock())
    load = Loader()
    load.gate = asyncio.Event()
    waiters = [asyncio.create_task(cache.get("k", load)) for _ in range(500)]
    await asyncio.sleep(0)
    load.gate.set()
    results = await asyncio.gather(*waiters)
    assert load.calls == 1
    assert {value for value, _ in results} == {1}
    assert [lookup for _, lookup in results].count(Lookup.MISS) == 1
    assert [lookup for _, lookup in results].count(Lookup.COALESCED) == 499


async def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    cache = new_cache(10, Clock())
    load = Loader()
    load.gate = asyncio.Event()
    first = asyncio.create_task(cache.get("k", load))
    second = asyncio.create_task(cache.get("k", load))
    await asyncio.sleep(0)
    first.cancel()
    load.gate.set()
    assert await second == (1, Lookup.COALESCED)
    assert await cache.get("k", load) == (1, Lookup.HIT)


async def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = new_cache(10, clock)
    load = Loader(ttl=10)
    await cache.get("k", load)
    clock.now += 10.01
    assert await cache.get("k", load) == (2, Lookup.MISS)


async def test_refresh_ahead_serves_cached_and_reloads_once_in_background() -> None:
    clock = Clock()
    cache = new_cache(10, clock)
    load = Loader(ttl=10)
    await cache.get("k", load)
    clock.now += 8.5  # past 80 % of the lifetime
    load.gate = asyncio.Event()
    assert await cache.get("k", load) == (1, Lookup.STALE_REFRESH)
    assert await cache.get("k", load) == (1, Lookup.HIT)  # the refresh is already running
    load.gate.set()
    await asyncio.sleep(0.01)
    assert load.calls == 2
    assert await cache.get("k", load) == (2, Lookup.HIT)


async def test_failed_refresh_keeps_the_good_answer() -> None:
    clock = Clock()
    cache = new_cache(10, clock)
    await cache.get("k", Loader(ttl=10))
    clock.now += 8.5
    failing = Loader(ttl=1, definitive=False)
    assert (await cache.get("k", failing))[1] is Lookup.STALE_REFRESH
    await asyncio.sleep(0.01)
    assert await cache.get("k", failing) == (1, Lookup.HIT)
    clock.now += 1.01  # still valid, but past the retry time set by the failure
    assert (await cache.get("k", failing))[1] is Lookup.STALE_REFRESH


async def test_an_expired_entry_is_held_while_its_reload_runs_only_if_the_caller_says_so() -> None:
    clock = Clock()
    cache = new_cache(10, clock)
    await cache.get("k", Loader(ttl=10))
    clock.now += 8.5
    slow = Loader(ttl=10, first=2)
    slow.gate = asyncio.Event()
    assert await cache.get("k", slow) == (1, Lookup.STALE_REFRESH)  # the reload starts
    clock.now += 2.0  # expired 0.5 s ago, the reload still running
    lates: list[float] = []

    def hold(value: int, late: float) -> bool:
        lates.append(late)
        return late <= 1.0

    assert await cache.get("k", slow, hold) == (1, Lookup.STALE_REFRESH)
    assert lates == [pytest.approx(0.5, abs=0.11)]  # packed times are kept to 0.1 s
    clock.now += 1.0  # 1.5 s late: refused, so this caller waits for the reload
    waiting = asyncio.create_task(cache.get("k", slow, hold))
    await asyncio.sleep(0)
    assert not waiting.done()
    slow.gate.set()
    assert await waiting == (2, Lookup.COALESCED)


async def test_without_a_reload_in_flight_an_expired_entry_is_never_held() -> None:
    clock = Clock()
    cache = new_cache(10, clock)
    await cache.get("k", Loader(ttl=10))
    clock.now += 10.5
    assert await cache.get("k", Loader(ttl=10), lambda value, late: True) == (1, Lookup.MISS)


async def test_a_failed_reload_ends_the_hold() -> None:
    clock = Clock()
    cache = new_cache(10, clock)
    await cache.get("k", Loader(ttl=10))
    clock.now += 8.5
    failing = Loader(ttl=5, definitive=False, first=2)
    failing.gate = asyncio.Event()
    await cache.get("k", failing)
    clock.now += 2.0
    assert await cache.get("k", failing, lambda value, late: True) == (1, Lookup.STALE_REFRESH)
    failing.gate.set()
    await asyncio.sleep(0.01)
    assert await cache.get("k", failing, lambda value, late: True) == (2, Lookup.HIT)


async def test_failures_are_kept_for_their_short_ttl_and_not_refreshed_ahead() -> None:
    clock = Clock()
    cache = new_cache(10, clock)
    failing = Loader(ttl=5, definitive=False)
    await cache.get("k", failing)
    clock.now += 4.9
    assert await cache.get("k", failing) == (1, Lookup.HIT)
    clock.now += 0.2
    assert await cache.get("k", failing) == (2, Lookup.MISS)


async def test_zero_ttl_is_not_stored() -> None:
    cache = new_cache(10, Clock())
    load = Loader(ttl=0)
    await cache.get("k", load)
    assert len(cache) == 0
    assert await cache.get("k", load) == (2, Lookup.MISS)


async def test_size_is_bounded_least_recently_used_first() -> None:
    cache = new_cache(3, Clock())
    for key in "abc":
        await cache.get(key, Loader())
    await cache.get("a", Loader())  # a is now the most recent
    await cache.get("d", Loader())
    assert len(cache) == 3
    assert (await cache.get("b", Loader()))[1] is Lookup.MISS  # b was evicted
    assert (await cache.get("a", Loader()))[1] is Lookup.HIT


async def test_discard_drops_rejected_keys() -> None:
    cache = new_cache(10, Clock())
    for key in ("keep-1", "drop-1", "keep-2"):
        await cache.get(key, Loader())
    assert cache.discard(lambda key: key.startswith("keep")) == 1
    assert len(cache) == 2


async def test_a_loader_that_raises_reaches_every_waiter_and_is_not_cached() -> None:
    cache = new_cache(10, Clock())

    async def broken() -> Loaded[int]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await cache.get("k", broken)
    assert len(cache) == 0
    assert await cache.get("k", Loader()) == (1, Lookup.MISS)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SingleFlightCache(0)
