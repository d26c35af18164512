"""The block list file (`block_list_file`): YAML or JSON, a list of entries (or a mapping with
the list under `blocks`), each as `authz.core.blocks.entry_from_mapping` reads it:

    - fingerprint: 5f3a…            # or spki, serial: {issuer: DN, serial: hex}, subject, uri
      reason: "key leaked (INC-4711)"   # shown to the client
      by: alice                          # never shown to the client
      at: 2026-12-04T10:00:00Z
      expires: 2026-12-04T12:00:00Z      # optional

A file that cannot be read whole is refused with the line at fault: the caller keeps the list
it had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from authz.core.blocks import BlockEntry, entry_from_mapping

MAX_FILE_BYTES = 16 * 1024 * 1024
SOURCE = "file"


class BlockFileError(ValueError):
    """The file cannot be used; the message names the file and, where it can, the line."""


def read_block_file(path: Path) -> list[BlockEntry]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise BlockFileError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BlockFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return parse_block_text(data.decode("utf-8", "replace"), str(path))


def parse_block_text(text: str, name: str) -> list[BlockEntry]:
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            items = _items(loader, root, name)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise BlockFileError(f"{name}: {where}not valid YAML or JSON: {problem}") from None
    entries = []
    for line, item in items:
        try:
            entries.append(entry_from_mapping(item, SOURCE))
        except ValueError as e:
            raise BlockFileError(f"{name}: line {line}: {e}") from None
    return entries


def _items(loader: yaml.SafeLoader, root: yaml.Node | None, name: str) -> list[tuple[int, Any]]:
    if root is None:
        return []
    if isinstance(root, yaml.MappingNode):
        found = [v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "blocks"]
        if len(found) != 1 or len(root.value) != 1:
            raise BlockFileError(f"{name}: expected a list of entries, or `blocks:` with one")
        root = found[0]
    if not isinstance(root, yaml.SequenceNode):
        raise BlockFileError(f"{name}: expected a list of entries")
    return [
        (node.start_mark.line + 1, loader.construct_object(node, deep=True)) for node in root.value
    ]
