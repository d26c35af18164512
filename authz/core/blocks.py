"""The emergency block list: certificates an operator refuses now, whatever the CA says. Pure.

An entry names a certificate by its SHA-256 fingerprint, by issuer and serial, by its public key
(SHA-256 of the SubjectPublicKeyInfo: a leaked key stays blocked when the CA re-issues a
certificate for it), by subject DN or by a URI SAN (a SPIFFE ID, say). Entries only ever deny
(`certificate_blocked`), in audit mode too, and may expire. The lists come from the edges (a
file, the shared store); the core holds the merged one (`Blocks`) and looks a leaf up in O(1):
its keys are worked out once per certificate object and kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authz.core.certificate import sans_of_type
from authz.core.memo import ByIdentity
from authz.core.names import display, name_key, parse_dn

# Shown to the client in the refusal's message: enough for a ticket number, never a novel.
MAX_REASON_CHARS = 200
MAX_BY_CHARS = 100
LEAF_KEYS_MEMO = 4096


class BlockKind(StrEnum):
    FINGERPRINT = "fingerprint"
    """SHA-256 of the certificate's DER, hex (`openssl x509 -fingerprint -sha256`)."""
    SERIAL = "serial"
    """The issuer's DN and the serial number (hex, as `openssl x509 -serial` prints it)."""
    SPKI = "spki"
    """SHA-256 of the SubjectPublicKeyInfo DER, hex: the key, whatever certificate carries it."""
    SUBJECT = "subject"
    """The subject DN (compared as issuer DNs are)."""
    URI = "uri"
    """A URI SAN, exactly (a SPIFFE ID)."""


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _hex(text: str, what: str) -> str:
    cleaned = text.strip().lower().replace(":", "")
    if "=" in cleaned:  # `sha256 Fingerprint=AB:CD:…` as openssl prints it
        cleaned = cleaned.rpartition("=")[2]
    if not _HEX64.fullmatch(cleaned):
        raise ValueError(f"{what} must be 64 hex digits (a SHA-256), got {text!r}")
    return cleaned


def _serial(text: str) -> int:
    cleaned = text.strip().lower().replace(":", "")
    cleaned = cleaned.removeprefix("serial=").removeprefix("0x")
    try:
        return int(cleaned, 16)
    except ValueError:
        raise ValueError(
            f"serial must be hex (as openssl x509 -serial prints it), got {text!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class Selector:
    """What an entry matches, in canonical form: `key` is what a leaf's keys are compared with
    (the kind and a deterministic text: `CN=a` and `cn=A` give the same), `text` how it is
    shown."""

    kind: BlockKind
    key: str
    text: str
    written: Any = None
    """The value as a file or the store writes it (the text, or issuer and serial)."""

    @property
    def id(self) -> str:
        """Stable: the same selector has the same id however it was written, in every process."""
        digest = hashlib.sha256(self.key.encode()).hexdigest()
        return f"{self.kind.value}-{digest[:12]}"


def _key(kind: BlockKind, value: Hashable) -> str:
    """One string per (kind, value): a dict lookup with it reuses the string's cached hash."""
    return f"{kind.value}\0{_canonical(value)}"


def _canonical(key: Hashable) -> str:
    """A key as deterministic text: a name's RDNs in order, each RDN's attributes sorted."""
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int):
        return f"{_canonical(key[0])}#{key[1]:x}"
    if isinstance(key, tuple):
        return ",".join("+".join(sorted(f"{t}={v}" for t, v in rdn)) for rdn in key)
    return str(key)


def selector(kind: BlockKind | str, value: Any) -> Selector:
    """Canonical form of what the operator wrote; ValueError says what is wrong with it."""
    kind = BlockKind(kind)
    if kind in (BlockKind.FINGERPRINT, BlockKind.SPKI):
        if not isinstance(value, str):
            raise ValueError(f"{kind.value} must be a string of hex digits")
        text = _hex(value, kind.value)
        return Selector(kind, _key(kind, text), text, text)
    if kind is BlockKind.SERIAL:
        if not isinstance(value, Mapping) or set(value) != {"issuer", "serial"}:
            raise ValueError("serial must be a mapping of issuer (a DN) and serial (hex)")
        issuer = parse_dn(str(value["issuer"]))
        number = _serial(str(value["serial"]))
        written = {"issuer": display(issuer), "serial": f"{number:x}"}
        key = _key(kind, (name_key(issuer), number))
        return Selector(kind, key, f"{display(issuer)} {number:x}", written)
    if kind is BlockKind.SUBJECT:
        subject = parse_dn(str(value))
        return Selector(kind, _key(kind, name_key(subject)), display(subject), display(subject))
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError("uri must be the URI SAN exactly, without surrounding spaces")
    return Selector(kind, _key(kind, value), value, value)


@dataclass(frozen=True, slots=True)
class BlockEntry:
    selector: Selector
    reason: str
    by: str = ""
    at: dt.datetime | None = None
    expires: dt.datetime | None = None
    source: str = ""
    """Where it came from: `file` or `store` (set by the edge that read it)."""

    @property
    def id(self) -> str:
        return self.selector.id

    @property
    def kind(self) -> BlockKind:
        return self.selector.kind

    def active(self, now: dt.datetime) -> bool:
        return self.expires is None or now < self.expires

    def to_mapping(self) -> dict[str, Any]:
        """The entry as a file or the store holds it (what `entry_from_mapping` reads)."""
        found: dict[str, Any] = {self.kind.value: self.selector.written, "reason": self.reason}
        if self.by:
            found["by"] = self.by
        if self.at is not None:
            found["at"] = _timestamp(self.at)
        if self.expires is not None:
            found["expires"] = _timestamp(self.expires)
        return found


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} must be an ISO 8601 time, got {value!r}") from None
    else:
        raise ValueError(f"{what} must be an ISO 8601 time, got {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def entry_from_mapping(item: Any, source: str = "") -> BlockEntry:
    """One entry as a file or the store writes it: exactly one of the kinds, a reason, and
    optionally by, at, expires. ValueError says what is wrong."""
    if not isinstance(item, Mapping):
        raise ValueError("an entry must be a mapping")
    kinds = [k for k in BlockKind if k.value in item]
    if len(kinds) != 1:
        names = ", ".join(k.value for k in BlockKind)
        raise ValueError(f"an entry names exactly one of {names}")
    unknown = set(item) - {kinds[0].value, "reason", "by", "at", "expires"}
    if unknown:
        raise ValueError(f"unknown field {sorted(map(str, unknown))[0]!r}")
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("an entry needs a reason (shown to the client)")
    if len(reason) > MAX_REASON_CHARS or any(c < " " for c in reason):
        raise ValueError(f"reason must be one line of at most {MAX_REASON_CHARS} characters")
    by = item.get("by", "")
    if not isinstance(by, str) or len(by) > MAX_BY_CHARS:
        raise ValueError(f"by must be a name of at most {MAX_BY_CHARS} characters")
    return BlockEntry(
        selector(kinds[0], item[kinds[0].value]),
        reason.strip(),
        by,
        _moment(item.get("at"), "at"),
        _moment(item.get("expires"), "expires"),
        source,
    )


def leaf_keys(leaf: x509.Certificate) -> tuple[str, ...]:
    """Every key a block entry could match this certificate by."""
    keys = [
        _key(BlockKind.FINGERPRINT, leaf.fingerprint(hashes.SHA256()).hex()),
        _key(BlockKind.SPKI, _spki(leaf)),
        *(_key(BlockKind.URI, uri) for uri in sans_of_type(leaf, x509.UniformResourceIdentifier)),
    ]
    # An undecodable name: only the other keys can match.
    with contextlib.suppress(ValueError):
        keys.append(_key(BlockKind.SERIAL, (name_key(leaf.issuer), leaf.serial_number)))
    with contextlib.suppress(ValueError):
        keys.append(_key(BlockKind.SUBJECT, name_key(leaf.subject)))
    return tuple(keys)


def _spki(leaf: x509.Certificate) -> str:
    der = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def spki_of(leaf: x509.Certificate) -> str:
    """SHA-256 of a certificate's SubjectPublicKeyInfo, hex (what an `spki` entry names)."""
    return _spki(leaf)


@dataclass(frozen=True)
class BlockList:
    """Entries merged from every source, indexed by key (an entry given by two sources is kept
    once, the first given). `generation` identifies the content, so replicas holding the same
    list report the same one, and Envoy's verdict cache can tell when it changed."""

    entries: tuple[BlockEntry, ...] = ()
    _index: Mapping[str, BlockEntry] = field(default_factory=dict, repr=False, compare=False)
    generation: str = "0"

    @classmethod
    def of(cls, entries: Iterable[BlockEntry]) -> BlockList:
        index: dict[str, BlockEntry] = {}
        for entry in entries:
            index.setdefault(entry.selector.key, entry)
        kept = tuple(index.values())
        content = "\n".join(
            sorted(f"{e.id} {e.expires.timestamp() if e.expires else ''}" for e in kept)
        )
        generation = hashlib.sha256(content.encode()).hexdigest()[:16] if kept else "0"
        return cls(kept, index, generation)

    def match(self, keys: Iterable[str], now: dt.datetime) -> BlockEntry | None:
        index = self._index
        for key in keys:
            entry = index.get(key)
            if entry is not None and (entry.expires is None or now < entry.expires):
                return entry
        return None

    def active(self, now: dt.datetime) -> BlockList:
        """Without the entries expired by `now` (the same list when none has)."""
        if all(e.active(now) for e in self.entries):
            return self
        return BlockList.of(e for e in self.entries if e.active(now))

    def counts(self) -> dict[BlockKind, int]:
        found = dict.fromkeys(BlockKind, 0)
        for entry in self.entries:
            found[entry.kind] += 1
        return found

    def __len__(self) -> int:
        return len(self.entries)


EMPTY = BlockList()


class Blocks:
    """The block list a Check reads: the edges replace `current` as a whole (one attribute
    write, so a Check sees one list or the other, never half of one)."""

    def __init__(self, current: BlockList = EMPTY) -> None:
        self.current = current
        self._keys: ByIdentity[x509.Certificate, tuple[str, ...]] = ByIdentity(LEAF_KEYS_MEMO)

    def match(self, leaf: x509.Certificate, now: dt.datetime) -> BlockEntry | None:
        current = self.current
        if not current.entries:
            return None
        keys = self._keys.get(leaf)
        if keys is None:
            keys = self._keys.put(leaf, leaf_keys(leaf))
        return current.match(keys, now)

    @property
    def generation(self) -> str:
        return self.current.generation
