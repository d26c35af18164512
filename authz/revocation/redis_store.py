"""The shared revocation cache's store on Redis or Valkey — one node, a cluster or Sentinel's
master (`authz.redis_client`): plain GET/SET with PX for answers, SET NX PX for the short locks,
a token-checked release. An answer's lock is in its answer's hash slot
(`mtls-authz:v1:lock:{<its key>}`), so the two are read together on a cluster too."""

from __future__ import annotations

import secrets

from authz.redis_client import connect

# Delete the lock only if it is still ours (it may have expired and been taken by another).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisStore:
    def __init__(self, url: str, timeout: float) -> None:
        """`url`: any form `authz.redis_client` reads."""
        self._client = connect(url, timeout, health_check_interval=30)
        self._token = secrets.token_hex(8).encode()
        self._release = self._client.register_script(_RELEASE)

    async def ping(self) -> None:
        await self._client.ping()

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(key)
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"unexpected reply {type(value).__name__}")
        return value

    async def put(self, key: str, value: bytes | memoryview, ttl: float) -> None:
        await self._client.set(key, value, px=max(1, int(ttl * 1000)))

    async def claim(self, key: str, ttl: float) -> bool:
        return bool(await self._client.set(key, self._token, nx=True, px=max(1, int(ttl * 1000))))

    async def watch(self, key: str, lock: str) -> tuple[bytes | None, bool]:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.exists(lock)
            value, held = await pipe.execute()
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"unexpected reply {type(value).__name__}")
        return value, bool(held)

    async def release(self, key: str) -> None:
        await self._release(keys=[key], args=[self._token])

    async def close(self) -> None:
        await self._client.aclose()
