"""A bounded memo keyed by object identity. Pure.

For keys whose own hash is costly — a certificate hashes its DER, ~1 µs, and a returning
client's Check would hash its leaf several times — but which reach the memo as the same object
every time (the verified-certificate memo hands back the same leaf and issuer). Each entry keeps
its key alive, so an id can never be reused while its entry exists; a different object with
equal content is simply a miss.
"""

from __future__ import annotations

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
