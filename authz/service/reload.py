"""Hot reload: SIGHUP, or a change on disk of the config file or trust bundle.

Kubernetes updates mounted ConfigMaps and Secrets by swapping a `..data` symlink, so a file is
identified by where its path resolves to as well as by inode, size and modification time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from authz.files import FileStamp, stamp

log = logging.getLogger("authz.reload")


class FileWatcher:
    """Polls `paths()` every `interval` seconds and calls `changed()` when any stamp moves."""

    def __init__(
        self,
        paths: Callable[[], Sequence[Path]],
        changed: Callable[[], Awaitable[None]],
        interval: float,
    ) -> None:
        self._paths = paths
        self._changed = changed
        self._interval = interval
        self._stamps = self._read()

    def _read(self) -> dict[Path, FileStamp]:
        return {path: stamp(path) for path in self._paths()}

    def remember(self) -> None:
        """Take the files as they are now as the baseline (after a reload)."""
        self._stamps = self._read()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            current = self._read()
            if current != self._stamps:
                self._stamps = current
                log.info("configuration files changed on disk")
                await self._changed()
