"""Bounded memos. Pure.

`ByIdentity`: a memo keyed by object identity.

For keys whose own hash is costly — a certificate hashes its DER, ~1 µs, and a returning
client's Check would hash its leaf several times — but which reach the memo as the same object
every time (the verified-certificate memo hands back the same leaf and issuer). Each entry keeps
its key alive, so an id can never be reused while its entry exists; a different object with
equal content is simply a miss.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByIdentity(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: dict[int, tuple[K, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(id(key))
        return entry[1] if entry is not None and entry[0] is key else None

    def put(self, key: K, value: V) -> V:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # crude but bounded; returning clients refill it at once
        self._entries[id(key)] = (key, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)


# Texts longer than this are remembered by digest: a memo never holds a client's large header.
TEXT_KEY_CHARS = 4096


def text_key(text: str) -> str | bytes:
    """A memo key for `text`: the text itself when short, else its BLAKE2b-160 digest."""
    if len(text) <= TEXT_KEY_CHARS:
        return text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).digest()


class SizedMemo(Generic[V]):
    """A least-recently-used memo bounded by what its entries hold (their `size`, bytes or
    characters as the caller counts them), not by how many there are."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._size = 0
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        if size > self._max_size:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old[1]
        self._entries[key] = (value, size)
        self._size += size
        while self._size > self._max_size:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._size -= dropped

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._entries)
