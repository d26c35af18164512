"""Telling that a file changed, as Kubernetes changes mounted ConfigMaps and Secrets: by writing
a new directory and swapping a `..data` symlink. A file is identified by where its path resolves
as well as by inode, size and modification time."""

from __future__ import annotations

import os
from pathlib import Path

FileStamp = tuple[str, int, int, int] | None


def stamp(path: Path) -> FileStamp:
    """What identifies the file's current content, or None when it cannot be read."""
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError:
        return None
    return real, info.st_ino, info.st_size, info.st_mtime_ns
