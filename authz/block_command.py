"""`mtls-authz block`, `unblock` and `blocks`: the operator's emergency lever.

They write and read the block list in the shared store (`revocation_cache_url`, with Redis' own
authentication: no endpoint of the service writes it), or, with `--file`, a block list file for
GitOps. Every replica applies a change to the store within a second; Envoy's verdict caches drop
what they replay within another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from authz.blocklist.file_source import BlockFileError, read_block_file
from authz.blocklist.store import BlockStore
from authz.core.blocks import (
    BlockEntry,
    BlockKind,
    BlockList,
    Selector,
    entry_from_mapping,
    selector,
    spki_of,
)
from authz.core.certificate import sans_of_type
from authz.core.names import display

STORE_TIMEOUT = 5.0
EXIT_OK, EXIT_ERROR = 0, 1


class BlockError(Exception):
    """The command cannot do what it was asked; the message says why."""


@dataclass(frozen=True)
class Where:
    """Where the list lives: the store's URL and/or a file."""

    store: str = ""
    file: Path | None = None


def selector_from_args(
    kind: str | None, value: str | None, serial: Sequence[str] | None, cert: Path | None,
    match: str,
) -> Selector:  # fmt: skip
    if cert is not None:
        leaf = _read_certificate(cert)
        return _from_certificate(leaf, BlockKind(match))
    if serial:
        issuer, number = serial
        return selector(BlockKind.SERIAL, {"issuer": issuer, "serial": number})
    if kind is None or value is None:
        raise BlockError(
            "name what to block: --cert FILE, --fingerprint, --spki, --serial, --subject or --uri"
        )
    return selector(kind, value)


def _read_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise BlockError(f"{path}: not a certificate ({e})") from None


def _from_certificate(leaf: x509.Certificate, kind: BlockKind) -> Selector:
    if kind is BlockKind.FINGERPRINT:
        return selector(kind, leaf.fingerprint(hashes.SHA256()).hex())
    if kind is BlockKind.SPKI:
        return selector(kind, spki_of(leaf))
    if kind is BlockKind.SERIAL:
        return selector(kind, {"issuer": display(leaf.issuer), "serial": f"{leaf.serial_number:x}"})
    if kind is BlockKind.SUBJECT:
        return selector(kind, display(leaf.subject))
    uris = sans_of_type(leaf, x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise BlockError(f"the certificate has {len(uris)} URI SANs: give --uri")
    return selector(kind, str(uris[0]))


def block(where: Where, chosen: Selector, reason: str, who: str, lasting: float | None) -> int:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    mapping: dict[str, Any] = {
        chosen.kind.value: chosen.written,
        "reason": reason,
        "by": who or getpass.getuser(),
        "at": now.isoformat(),
    }
    if lasting is not None:
        mapping["expires"] = (now + dt.timedelta(seconds=lasting)).isoformat()
    entry = entry_from_mapping(mapping)
    if where.file is not None:
        _write_file(
            where.file, [e for e in _file_entries(where.file) if e.id != entry.id] + [entry]
        )
        print(f"blocked {entry.id}: {chosen.kind.value} {chosen.text} (written to {where.file})")
        return EXIT_OK
    version = asyncio.run(_put(where.store, entry))
    until = f" until {mapping['expires']}" if lasting is not None else ""
    print(f"blocked {entry.id}: {chosen.kind.value} {chosen.text}{until} (store version {version})")
    return EXIT_OK


def unblock(where: Where, ids: Sequence[str], everything: bool) -> int:
    if where.file is not None:
        kept = [] if everything else [e for e in _file_entries(where.file) if e.id not in ids]
        before = len(_file_entries(where.file))
        _write_file(where.file, kept)
        print(f"unblocked {before - len(kept)} entries (written to {where.file})")
        return EXIT_OK
    removed, version = asyncio.run(_remove(where.store, () if everything else ids))
    print(f"unblocked {removed} entries (store version {version})")
    return EXIT_OK if removed or everything else EXIT_ERROR


def read_list(where: Where) -> BlockList:
    """The merged list, as the service would enforce it (file and store)."""
    entries: list[BlockEntry] = []
    if where.file is not None:
        entries += _file_entries(where.file)
    if where.store:
        try:
            entries += asyncio.run(_read(where.store))
        except Exception as e:  # unreachable, refused, timed out: said, never a crash
            raise BlockError(f"the store failed: {type(e).__name__}: {e}") from None
    return BlockList.of(entries)


def listing(where: Where, as_json: bool) -> int:
    now = dt.datetime.now(dt.UTC)
    merged = read_list(where)
    if as_json:
        print(json.dumps([_row(e, now) for e in merged.entries], indent=2))
        return EXIT_OK
    if not merged.entries:
        print("no blocks")
    for entry in merged.entries:
        row = _row(entry, now)
        state = (
            "expired"
            if not entry.active(now)
            else (f"until {row['expires']}" if entry.expires else "no expiry")
        )
        print(f"{entry.id}  {row['kind']} {row['value']}  [{row['source']}, {state}]")
        print(f"    {entry.reason!r} by {entry.by or '?'} at {row.get('at', '?')}")
    return EXIT_OK


def _row(entry: BlockEntry, now: dt.datetime) -> dict[str, Any]:
    mapping = entry.to_mapping()
    return {
        "id": entry.id,
        "kind": entry.kind.value,
        "value": entry.selector.text,
        "source": entry.source,
        "active": entry.active(now),
        **{k: v for k, v in mapping.items() if k in ("reason", "by", "at", "expires")},
    }


def _file_entries(path: Path) -> list[BlockEntry]:
    if not path.exists():
        return []
    try:
        return read_block_file(path)
    except BlockFileError as e:
        raise BlockError(str(e)) from None


def _write_file(path: Path, entries: list[BlockEntry]) -> None:
    """Atomically: a new file beside it, renamed over it (what the service watches for)."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(yaml.safe_dump([e.to_mapping() for e in entries], sort_keys=False))
    temporary.replace(path)


async def _put(url: str, entry: BlockEntry) -> int:
    store = BlockStore(url, STORE_TIMEOUT)
    try:
        return await store.put([entry])
    finally:
        await store.close()


async def _remove(url: str, ids: Sequence[str]) -> tuple[int, int]:
    store = BlockStore(url, STORE_TIMEOUT)
    try:
        return await store.remove(ids)
    finally:
        await store.close()


async def _read(url: str) -> list[BlockEntry]:
    store = BlockStore(url, STORE_TIMEOUT)
    try:
        snapshot = await store.read()
    finally:
        await store.close()
    found = []
    for key, item in snapshot.items.items():
        try:
            found.append(entry_from_mapping(item, "store"))
        except ValueError as e:
            print(f"warning: the store's entry {key} cannot be read: {e}")
    return found
