"""A verified CRL's revoked serials, held compactly and looked up in O(log n). Pure.

A million-entry CRL held as a dict of int → (datetime, reason) costs ~190 bytes an entry; here
each entry is 37: the serial's low 64 bits in a sorted array (what the binary search reads),
the whole serial as 20 big-endian bytes (RFC 5280 §4.1.2.2 allows at most 20 octets; a hit is
confirmed on all of them), the revocation time in microseconds and the reason as one byte.
Serials outside that form (negative, or longer than 20 octets: non-conforming, but some CAs
issue them) go to a small dict beside the arrays, so no serial is ever misread.

The same parts cross a pipe from the process that verified the CRL (`to_parts`/`from_parts`):
four buffers and a short JSON header, nothing the reader executes; the reader holds the buffers
as they arrived (memoryviews), so taking in a million entries copies nothing at once.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from cryptography import x509

from authz.core.revocation import CertStatus, RevocationStatus

Buffer: TypeAlias = "bytes | bytearray | memoryview | array[int]"

SERIAL_BYTES = 20
_SERIAL_LIMIT = 1 << (8 * SERIAL_BYTES)
_LOW = (1 << 64) - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
REASONS: tuple[str | None, ...] = (None, *(flag.value for flag in x509.ReasonFlags))
"""Reason codes: 0 is no reason given; then RFC 5280's CRLReason values as cryptography names
them."""
_REASON_CODES = bytes(range(len(REASONS)))


def micros(when: dt.datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


class RevokedSerials:
    """Revoked serial → (revocation time in µs since the epoch, reason code). The arrays are
    sorted by `keys` (`build` sorts them; the verifying process sends them sorted)."""

    __slots__ = ("_keys", "_odd", "_reasons", "_serials", "_times")

    def __init__(
        self,
        keys: Buffer,
        serials: Buffer,
        times: Buffer,
        reasons: Buffer,
        odd: dict[int, tuple[int, int]],
    ) -> None:
        """Buffers: arrays (from `build`) or bytes read from a pipe, held without copying."""
        self._keys = memoryview(keys).cast("B").cast("Q")
        self._times = memoryview(times).cast("B").cast("q")
        self._serials = memoryview(serials).cast("B")
        self._reasons = memoryview(reasons).cast("B")
        count = len(self._keys)
        if (
            len(self._serials) != count * SERIAL_BYTES
            or len(self._times) != count
            or len(self._reasons) != count
            or self._reasons.tobytes().translate(None, _REASON_CODES)  # a byte not a reason
            or any(code >= len(REASONS) for _, code in odd.values())
        ):
            raise ValueError("inconsistent revoked-serial index")
        self._odd = odd

    @classmethod
    def build(cls, entries: Iterable[tuple[int, int, int]]) -> RevokedSerials:
        """From (serial, revocation time in µs, reason code); a serial listed twice keeps its
        last entry, as a dict would. Built in arrays from the start: a million entries held as
        Python objects on the way would cost several hundred MB."""
        keys, serials, times, reasons = array("Q"), bytearray(), array("q"), bytearray()
        odd: dict[int, tuple[int, int]] = {}
        for serial, when, code in entries:
            if 0 <= serial < _SERIAL_LIMIT:
                keys.append(serial & _LOW)
                serials += serial.to_bytes(SERIAL_BYTES, "big")
                times.append(when)
                reasons.append(code)
            else:
                odd[serial] = (when, code)
        order = sorted(range(len(keys)), key=keys.__getitem__)  # stable: listing order kept
        out_keys, out_serials, out_times, out_reasons = (
            array("Q"),
            bytearray(),
            array("q"),
            bytearray(),
        )
        run_start = 0
        while run_start < len(order):  # a run: entries whose serials share their low 64 bits
            run_end = run_start + 1
            key = keys[order[run_start]]
            while run_end < len(order) and keys[order[run_end]] == key:
                run_end += 1
            run = order[run_start:run_end]
            if len(run) == 1:  # nearly always
                last = {b"": run[0]}
            else:
                last = {bytes(serials[i * SERIAL_BYTES : (i + 1) * SERIAL_BYTES]): i for i in run}
            for i in last.values():
                out_keys.append(key)
                out_serials += serials[i * SERIAL_BYTES : (i + 1) * SERIAL_BYTES]
                out_times.append(times[i])
                out_reasons.append(reasons[i])
            run_start = run_end
        return cls(out_keys, out_serials, out_times, out_reasons, odd)

    def __len__(self) -> int:
        return len(self._keys) + len(self._odd)

    def get(self, serial: int) -> tuple[int, int] | None:
        """(revocation time in µs, reason code), or None when `serial` is not listed."""
        if not 0 <= serial < _SERIAL_LIMIT:
            return self._odd.get(serial)
        keys = self._keys
        low = serial & _LOW
        i = bisect_left(keys, low)
        count = len(keys)
        if i == count or keys[i] != low:
            return None
        wanted = serial.to_bytes(SERIAL_BYTES, "big")
        while i < count and keys[i] == low:  # serials that share their low 64 bits
            if self._serials[i * SERIAL_BYTES : (i + 1) * SERIAL_BYTES] == wanted:
                return self._times[i], self._reasons[i]
            i += 1
        return None

    def nbytes(self) -> int:
        """What the index holds in memory (the buffers and their objects; the odd dict's
        entries counted at their objects' sizes)."""
        parts = (self._keys, self._serials, self._times, self._reasons)
        size = sum(part.nbytes + sys.getsizeof(part) for part in parts)
        size += sys.getsizeof(self._odd)
        for serial, value in self._odd.items():
            size += sys.getsizeof(serial) + sys.getsizeof(value) + sum(map(sys.getsizeof, value))
        return size

    # -- across a pipe ---------------------------------------------------------------------------

    def to_parts(self) -> tuple[dict[str, object], list[Buffer]]:
        """A JSON-able header and the buffers, in the order `from_parts` reads them."""
        odd = [[str(serial), when, code] for serial, (when, code) in self._odd.items()]
        header: dict[str, object] = {"count": len(self._keys), "byteorder": sys.byteorder}
        buffers: list[Buffer] = [
            self._keys,
            self._serials,
            self._times,
            self._reasons,
            json.dumps(odd).encode(),
        ]
        return header, buffers

    @staticmethod
    def part_sizes(header: dict[str, object]) -> list[int | None]:
        """How long each buffer is (None: the last, whose length is sent before it)."""
        count = header["count"]
        if not isinstance(count, int) or count < 0:
            raise ValueError("bad count")
        return [8 * count, SERIAL_BYTES * count, 8 * count, count, None]

    @classmethod
    def from_parts(cls, header: dict[str, object], buffers: list[Buffer]) -> RevokedSerials:
        if header.get("byteorder") != sys.byteorder:
            raise ValueError("index written with another byte order")
        keys, serials, times, reasons, odd_json = buffers
        odd: dict[int, tuple[int, int]] = {}
        for serial, when, code in json.loads(bytes(odd_json)):
            odd[int(serial)] = (int(when), int(code))
        return cls(keys, serials, times, reasons, odd)


@dataclass(frozen=True, slots=True)
class CrlIndex:
    """A verified CRL reduced to what lookups need: its revoked serials and its times."""

    revoked: RevokedSerials
    this_update: dt.datetime
    next_update: dt.datetime | None
    valid_until: dt.datetime

    def status(self, serial: int) -> RevocationStatus:
        """The certificate's status in OCSP's terms, so both sources feed one decision."""
        entry = self.revoked.get(serial)
        if entry is None:
            return RevocationStatus(
                CertStatus.GOOD, self.this_update, self.next_update, self.valid_until
            )
        return RevocationStatus(
            CertStatus.REVOKED,
            self.this_update,
            self.next_update,
            self.valid_until,
            from_micros(entry[0]),
            REASONS[entry[1]],
        )

    def to_parts(self) -> tuple[dict[str, object], list[Buffer]]:
        header, buffers = self.revoked.to_parts()
        header["times"] = [
            micros(self.this_update),
            None if self.next_update is None else micros(self.next_update),
            micros(self.valid_until),
        ]
        return header, buffers

    @classmethod
    def from_parts(cls, header: dict[str, object], buffers: list[Buffer]) -> CrlIndex:
        times = header.get("times")
        if not isinstance(times, list) or len(times) != 3:
            raise ValueError("bad times")
        this_update, next_update, valid_until = times
        return cls(
            RevokedSerials.from_parts(header, buffers),
            from_micros(int(this_update)),
            None if next_update is None else from_micros(int(next_update)),
            from_micros(int(valid_until)),
        )
