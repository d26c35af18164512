"""Compact OCSP cache entries: a key is one int, an answer a few dozen bytes. Pure.

A million cached answers must fit in a few hundred MB (issue: ≤ 300 bytes each). The key packs
what identifies an answer — CertID hash algorithm, issuer, responder URL (together a *group*,
interned once per process) and serial — into one int; the answer packs status, times (exact, in
microseconds), reason and latency into bytes, with the URL taken back from the key's group.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass

from cryptography import x509

from authz.core.revocation import (
    CertStatus,
    RevocationFailure,
    RevocationOutcome,
    RevocationStatus,
)

GROUP_BITS = 24


@dataclass(frozen=True, slots=True)
class KeyParts:
    hash_name: str
    issuer_fingerprint: bytes
    serial: int
    url: str


class _Groups:
    """(hash algorithm, issuer fingerprint, URL) ↔ a small number, for the life of the process.
    There are as many as issuers times the responder URLs their certificates name."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, bytes, str], int] = {}
        self._parts: list[tuple[str, bytes, str]] = []

    def id(self, hash_name: str, fingerprint: bytes, url: str) -> int:
        group = (hash_name, fingerprint, url)
        known = self._ids.get(group)
        if known is None:
            known = self._ids[group] = len(self._parts)
            self._parts.append(group)
        return known

    def parts(self, group: int) -> tuple[str, bytes, str]:
        return self._parts[group]


_GROUPS = _Groups()


def cache_key(hash_name: str, fingerprint: bytes, serial: int, url: str) -> int:
    """Lossless: the serial (any size or sign — RFC 5280 forbids negative and over-long ones,
    some CAs issue them) above the group's number."""
    group = _GROUPS.id(hash_name, fingerprint, url)
    if group >= 1 << GROUP_BITS:
        raise OverflowError("more (issuer, responder URL) pairs than a cache key can name")
    folded = serial << 1 if serial >= 0 else (-serial << 1) | 1
    return (folded << GROUP_BITS) | group


def key_parts(key: int) -> KeyParts:
    hash_name, fingerprint, url = _GROUPS.parts(key & ((1 << GROUP_BITS) - 1))
    folded = key >> GROUP_BITS
    serial = -(folded >> 1) if folded & 1 else folded >> 1
    return KeyParts(hash_name, fingerprint, serial, url)


# status, reason or failure, thisUpdate, nextUpdate, valid until, revocation time (µs since the
# Unix epoch; NONE when absent), latency; then the text a table cannot hold (UTF-8).
_ANSWER = struct.Struct("<BBqqqqd")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NONE = -(1 << 63)
_FAILED = 0xFF
_IN_TEXT = 0xFF
_STATUSES = tuple(CertStatus)
_FAILURES = tuple(RevocationFailure)
_REASONS: tuple[str | None, ...] = (None, *(flag.value for flag in x509.ReasonFlags))


def _micros(when: dt.datetime | None) -> int:
    if when is None:
        return _NONE
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(micros: int) -> dt.datetime | None:
    return None if micros == _NONE else _EPOCH + dt.timedelta(microseconds=micros)


class OutcomeCodec:
    """RevocationOutcome ↔ bytes, exactly (a test round-trips every field)."""

    def pack(self, key: int, value: RevocationOutcome) -> bytes:
        status = value.status
        if status is None:
            failure = value.failure
            assert failure is not None
            header = _ANSWER.pack(
                _FAILED, _FAILURES.index(failure), _NONE, _NONE, _NONE, _NONE, value.latency
            )
            return header + value.detail.encode()
        reason = status.revocation_reason
        code = _REASONS.index(reason) if reason in _REASONS else _IN_TEXT
        header = _ANSWER.pack(
            _STATUSES.index(status.status),
            code,
            _micros(status.this_update),
            _micros(status.next_update),
            _micros(status.valid_until),
            _micros(status.revocation_time),
            value.latency,
        )
        return header + (reason.encode() if code == _IN_TEXT and reason is not None else b"")

    def unpack(self, key: int, packed: bytes) -> RevocationOutcome:
        kind, code, this, next_, until, revoked, latency = _ANSWER.unpack_from(packed)
        url = key_parts(key).url
        text = packed[_ANSWER.size :].decode()
        if kind == _FAILED:
            return RevocationOutcome(url, failure=_FAILURES[code], detail=text, latency=latency)
        this_update, valid_until = _time(this), _time(until)
        assert this_update is not None and valid_until is not None
        status = RevocationStatus(
            _STATUSES[kind],
            this_update,
            _time(next_),
            valid_until,
            _time(revoked),
            text if code == _IN_TEXT else _REASONS[code],
        )
        return RevocationOutcome(url, status=status, latency=latency)
