from __future__ import annotations

import asyncio

from authz.core.revocation import Lookup
from authz.revocation.cache import Loaded, SingleFlightCache
from authz.revocation.prefetch import Prefetcher, Target


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(clock: Clock, rate: float = 100.0, used_within: float = 60.0):  # type: ignore[no-untyped-def]
    cache: SingleFlightCache[str, str] = SingleFlightCache(100, clock)
    loads: list[str] = []

    def loader(key: str, value: str):  # type: ignore[no-untyped-def]
        if value == "revoked":
            return None

        async def load() -> Loaded[str]:
            loads.append(key)
            return Loaded(f"{key}-fresh", 10)

        return load

    target = Target(cache, loader, lambda value: "http://responder.example/ocsp")
    return cache, Prefetcher(lambda: [target], used_within, rate, clock), loads


async def fill(cache: SingleFlightCache[str, str], *keys: str, value: str = "v") -> None:
    for key in keys:

        async def load(v: str = value) -> Loaded[str]:
            return Loaded(v, 10)

        await cache.get(key, load)


async def test_an_answer_in_use_is_refreshed_before_it_is_due_without_a_request() -> None:
    clock = Clock()
    cache, prefetcher, loads = setup(clock)
    await fill(cache, "a")
    clock.now += 8.5  # past 80 % of a 10 s life; nobody asked since
    assert prefetcher.run_once() == 1
    await asyncio.sleep(0.01)
    assert loads == ["a"]
    assert await cache.get("a", None) == ("a-fresh", Lookup.HIT)  # type: ignore[arg-type]


async def test_answers_nobody_used_recently_are_left_to_expire() -> None:
    clock = Clock()
    cache, prefetcher, loads = setup(clock, used_within=5)
    await fill(cache, "old")
    clock.now += 8.5
    assert prefetcher.run_once() == 0 and loads == []


async def test_answers_that_need_no_refresh_are_skipped() -> None:
    clock = Clock()
    cache, prefetcher, _ = setup(clock)
    await fill(cache, "r", value="revoked")
    clock.now += 8.5
    assert prefetcher.run_once() == 0


async def test_prefetch_rate_per_responder_is_capped() -> None:
    clock = Clock()
    cache, prefetcher, _ = setup(clock, rate=10)
    await fill(cache, *(f"k{i}" for i in range(30)))
    clock.now += 8.5
    assert prefetcher.run_once() == 10
    assert prefetcher.run_once() == 0  # budget spent
    clock.now += 1.0
    assert prefetcher.run_once() == 10
    await asyncio.sleep(0.01)
