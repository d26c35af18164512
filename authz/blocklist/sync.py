"""Keeps the core's block list current: the union of the file's entries and the store's, minus
those expired, swapped in as a whole.

- The file is polled every `FILE_POLL` seconds (a stat: identity, size, time) and read again when
  it has changed and then stayed as it is for one poll — an atomic rename and an in-place write
  alike, never a write caught half way (a file truncated on its way to new content would read as
  no blocks at all). A file that cannot be read whole keeps the entries it gave before; it is
  logged once (with the line at fault) and reported.
- The store is followed through its pub/sub channel and read again on every (re)connect and every
  `STORE_CHECK` seconds (its version compared), so a missed message never loses a change. The
  store unreachable: the last list read from it stays, forever, and that is reported.
- Entries past their expiry leave the list within a second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from authz.blocklist.file_source import BlockFileError, read_block_file
from authz.blocklist.store import BlockStore, Snapshot
from authz.core.blocks import BlockEntry, BlockList, Blocks, entry_from_mapping
from authz.files import stamp

FILE_POLL = 0.25
STORE_CHECK = 2.0
RETRY = 1.0
log = logging.getLogger("authz.blocks")


class BlockObserver(Protocol):
    def observe_blocks(self, blocks: BlockList) -> None: ...

    def observe_block_source(self, source: str, up: bool) -> None: ...

    def observe_block_sync(self, source: str) -> None:
        """A successful read of `source` just now."""
        ...


class BlockSync:
    def __init__(
        self,
        holder: Blocks,
        file: Path | None,
        store: BlockStore | None,
        observer: BlockObserver | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.holder = holder
        self._file = file
        self._store = store
        self._observer = observer
        self._now = now
        self._file_entries: list[BlockEntry] = []
        self._file_stamp: object = None
        self._file_changing: object = None
        self._file_problem: str | None = None
        self._store_entries: list[BlockEntry] = []
        self._store_seen: Snapshot | None = None
        self._store_up: bool | None = None

    @property
    def degraded(self) -> list[str]:
        """The sources not read as they are now."""
        found = []
        if self._file_problem is not None:
            found.append("file")
        if self._store is not None and not self._store_up:
            found.append("store")
        return found

    async def start(self, wait: float) -> None:
        """The first read of every source, the store's bounded by `wait` seconds: a replica
        that starts while the store is down enforces the file and says it is degraded."""
        if self._file is not None:
            self._read_file()
        if self._store is not None:
            try:
                await asyncio.wait_for(self._read_store(), wait)
            except Exception as error:
                self._store_failed(error)
            for risk in await self._store_risks(wait):
                log.warning("block list store: %s", risk)
        self._apply()

    async def close(self) -> None:
        if self._store is not None:
            try:
                await asyncio.wait_for(self._store.close(), 1.0)
            except Exception:  # closing at shutdown: nothing left to protect
                log.debug("closing the block list store failed", exc_info=True)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._expire())]
        if self._file is not None:
            tasks.append(asyncio.create_task(self._watch_file()))
        if self._store is not None:
            tasks.append(asyncio.create_task(self._follow_store()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    # -- the file ---------------------------------------------------------------------------

    def _read_file(self) -> None:
        assert self._file is not None
        self._file_stamp = stamp(self._file)
        try:
            entries = read_block_file(self._file)
        except BlockFileError as error:
            if str(error) != self._file_problem:  # once per fault, not once per poll
                log.error(
                    "block list file refused; the entries it gave before stay",
                    extra={"error": str(error), "entries_kept": len(self._file_entries)},
                )
            self._file_problem = str(error)
            self._source("file", False)
            return
        if self._file_problem is not None:
            log.warning("block list file usable again", extra={"entries": len(entries)})
        self._file_problem = None
        self._file_entries = entries
        self._source("file", True)
        if self._observer is not None:
            self._observer.observe_block_sync("file")

    async def _watch_file(self) -> None:
        assert self._file is not None
        while True:
            await asyncio.sleep(FILE_POLL)
            seen = stamp(self._file)
            if seen != self._file_stamp:
                if seen != self._file_changing:  # still being written, maybe: read it settled
                    self._file_changing = seen
                    continue
                self._read_file()
                self._apply()
            elif self._file_problem is None and self._observer is not None:
                self._observer.observe_block_sync("file")

    # -- the store --------------------------------------------------------------------------

    async def _read_store(self) -> None:
        assert self._store is not None
        snapshot = await self._store.read()
        seen = self._store_seen
        if seen is not None and seen.epoch is not None and snapshot.epoch != seen.epoch:
            # The store lost the list it gave (restarted empty, flushed, or written again since):
            # write back what was last read, then read what it holds now.
            version = await self._store.restore(seen.epoch, self._store_entries)
            if version:
                log.warning(
                    "the shared store had lost the block list; wrote back the entries last read",
                    extra={"entries": len(self._store_entries)},
                )
            snapshot = await self._store.read()
        self._store_ok()
        if seen is not None and (snapshot.epoch, snapshot.version) == (seen.epoch, seen.version):
            return
        entries = []
        for key, item in snapshot.items.items():
            try:
                entries.append(entry_from_mapping(item, "store"))
            except ValueError as error:
                log.error(
                    "block list store: an entry cannot be read",
                    extra={"id": key, "error": str(error)},
                )
        self._store_entries, self._store_seen = entries, snapshot
        self._apply()

    async def _store_risks(self, wait: float) -> list[str]:
        assert self._store is not None
        try:
            return await asyncio.wait_for(self._store.risks(), wait)
        except Exception:
            return []

    async def _follow_store(self) -> None:
        assert self._store is not None
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    pubsub = await self._store.subscribe()
                await self._read_store()
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=STORE_CHECK)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._store_failed(error)
                if pubsub is not None:
                    await _close_quietly(pubsub)
                    pubsub = None
                await asyncio.sleep(RETRY)

    def _store_ok(self) -> None:
        if self._store_up is False:
            log.warning("block list store reachable again")
        self._store_up = True
        self._source("store", True)
        if self._observer is not None:
            self._observer.observe_block_sync("store")

    def _store_failed(self, error: BaseException) -> None:
        if self._store_up is not False:
            log.warning(
                "block list store unreachable; enforcing the entries last read from it",
                extra={
                    "error": f"{type(error).__name__}: {error}",
                    "entries_kept": len(self._store_entries),
                },
            )
        self._store_up = False
        self._source("store", False)

    # -- the list ---------------------------------------------------------------------------

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            current = self.holder.current
            if current.active(self._now()) is not current:
                self._apply()

    def _apply(self) -> None:
        merged = BlockList.of([*self._file_entries, *self._store_entries]).active(self._now())
        if merged.generation != self.holder.current.generation:
            self.holder.current = merged
            log.info(
                "block list applied",
                extra={"entries": len(merged), "generation": merged.generation},
            )
        if self._observer is not None:
            self._observer.observe_blocks(self.holder.current)

    def _source(self, source: str, up: bool) -> None:
        if self._observer is not None:
            self._observer.observe_block_source(source, up)


async def _close_quietly(pubsub: object) -> None:
    try:
        await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[attr-defined]
    except Exception:  # a broken connection: nothing left to close cleanly
        log.debug("closing the block list subscription failed", exc_info=True)
