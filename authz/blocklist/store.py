"""The block list in the shared store (Redis or Valkey, `revocation_cache_url`): written by
`mtls-authz block`/`unblock` with Redis' own authentication, read by every replica.

Keys (one hash tag, so a Redis Cluster keeps them in one slot):

    mtls-authz:v1:{blocks}            hash: entry id -> the entry as JSON
    mtls-authz:v1:{blocks}:version    incremented by every change
    mtls-authz:v1:{blocks}:epoch      set when the list is first written: a store that lost its
                                      data (restarted without persistence, flushed) has none, or
                                      another one once written again

and every change is published on `mtls-authz:v1:{blocks}:changed`. Entries have no TTL in Redis:
expiry is the entries' own. A replica that finds the store has lost the list it last read writes
those entries back (`restore`): a block is never dropped because a store forgot it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from authz.core.blocks import BlockEntry
from authz.redis_client import connect

PREFIX = "mtls-authz:v1:{blocks}"
ENTRIES, VERSION, EPOCH, CHANNEL = (
    PREFIX,
    f"{PREFIX}:version",
    f"{PREFIX}:epoch",
    f"{PREFIX}:changed",
)
KEYS = [ENTRIES, VERSION, EPOCH]

# KEYS: entries, version, epoch. One consistent read (a script: atomic on one node or cluster
# slot): epoch, version, then the entries as field, value pairs.
_READ = """
return {redis.call('get', KEYS[3]), redis.call('get', KEYS[2]), redis.call('hgetall', KEYS[1])}
"""
# KEYS: entries, version, epoch. ARGV: channel, a new epoch, then id, json pairs. Creates the
# epoch if the list has none; returns the new version.
_PUT = """
redis.call('set', KEYS[3], ARGV[2], 'NX')
for i = 3, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
local version = redis.call('incr', KEYS[2])
redis.call('publish', ARGV[1], version)
return version
"""
# ARGV: channel, then ids (none: every entry). Returns {removed, version}.
_REMOVE = """
local removed
if #ARGV == 1 then
  removed = redis.call('hlen', KEYS[1])
  redis.call('del', KEYS[1])
else
  removed = redis.call('hdel', KEYS[1], unpack(ARGV, 2))
end
local version = redis.call('incr', KEYS[2])
redis.call('publish', ARGV[1], version)
return {removed, version}
"""
# ARGV: channel, the epoch the entries were read under, then id, json pairs. When the store no
# longer holds that epoch (it lost the list, or it was written again since), adds the entries it
# lacks and returns the new version; else 0.
_RESTORE = """
if redis.call('get', KEYS[3]) == ARGV[2] then return 0 end
redis.call('set', KEYS[3], ARGV[2], 'NX')
for i = 3, #ARGV, 2 do redis.call('hsetnx', KEYS[1], ARGV[i], ARGV[i + 1]) end
local version = redis.call('incr', KEYS[2])
redis.call('publish', ARGV[1], version)
return version
"""

# Policies that evict keys without a TTL when memory runs out: the block list has none.
_EVICTING = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The store's list as read at one moment."""

    epoch: str | None
    """None: the store holds no block list (never written, or lost)."""
    version: int
    items: dict[str, Any]
    """Entry id -> the entry's mapping (parsed JSON; not yet checked)."""


def _pairs(entries: Iterable[BlockEntry]) -> list[str]:
    out: list[str] = []
    for entry in entries:
        out += [entry.id, json.dumps(entry.to_mapping(), sort_keys=True)]
    return out


class BlockStore:
    def __init__(self, url: str, timeout: float) -> None:
        self._timeout = timeout
        self._client = connect(url, timeout)
        self._read = self._client.register_script(_READ)
        self._put = self._client.register_script(_PUT)
        self._remove = self._client.register_script(_REMOVE)
        self._restore = self._client.register_script(_RESTORE)

    async def read(self) -> Snapshot:
        epoch, version, flat = await self._read(keys=KEYS)
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        items: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                items[key.decode()] = json.loads(value)
            except (ValueError, UnicodeDecodeError):
                items[key.decode("utf-8", "replace")] = None  # the reader reports it
        return Snapshot(epoch.decode() if epoch else None, int(version or 0), items)

    async def put(self, entries: Iterable[BlockEntry]) -> int:
        args = [CHANNEL, secrets.token_hex(8), *_pairs(entries)]
        return int(await self._put(keys=KEYS, args=args))

    async def remove(self, ids: Iterable[str] = ()) -> tuple[int, int]:
        """Removes the entries named (none named: every entry); (how many went, version)."""
        removed, version = await self._remove(keys=KEYS, args=[CHANNEL, *ids])
        return int(removed), int(version)

    async def restore(self, epoch: str, entries: Iterable[BlockEntry]) -> int:
        return int(await self._restore(keys=KEYS, args=[CHANNEL, epoch, *_pairs(entries)]))

    async def subscribe(self) -> PubSub:
        if isinstance(self._client, RedisCluster):
            # A cluster's pub/sub picks its node from the slot map: learn it first.
            await asyncio.wait_for(self._client.initialize(), self._timeout)
        pubsub = self._client.pubsub()
        await asyncio.wait_for(pubsub.subscribe(CHANNEL), self._timeout)
        return pubsub

    async def risks(self) -> list[str]:
        """What in the store's own settings could lose the block list, in words."""
        try:
            policy = (await self._client.config_get("maxmemory-policy")).get("maxmemory-policy")
            persistence = await self._client.config_get("save")
            aof = await self._client.config_get("appendonly")
        except redis.ResponseError:
            return [
                "the store refuses CONFIG GET (a managed service?): make sure its "
                "maxmemory-policy does not evict keys without a TTL (noeviction or volatile-*)"
            ]
        found = []
        if policy in _EVICTING:
            found.append(
                f"maxmemory-policy {policy} may evict the block list (its keys have no TTL): "
                "use noeviction or a volatile-* policy"
            )
        if not persistence.get("save") and aof.get("appendonly") == "no":
            found.append(
                "the store has no persistence (save '' and appendonly no): a restart loses the "
                "block list until a running replica writes back what it last read"
            )
        return found

    async def close(self) -> None:
        await self._client.aclose()
