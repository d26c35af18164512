"""Compact OCSP cache entries lose nothing: every key part and every answer field round-trips."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.core.revocation import (
    CertStatus,
    RevocationFailure,
    RevocationOutcome,
    RevocationStatus,
)
from authz.revocation.compact import OutcomeCodec, cache_key, key_parts

FINGERPRINT = bytes(range(32))
URL = "http://ocsp.example/"
T = dt.datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=dt.UTC)


@given(st.integers(min_value=-(1 << 200), max_value=1 << 200))
def test_every_serial_round_trips_and_keys_never_collide(serial: int) -> None:
    key = cache_key("sha1", FINGERPRINT, serial, URL)
    parts = key_parts(key)
    assert (parts.hash_name, parts.issuer_fingerprint, parts.serial, parts.url) == (
        "sha1", FINGERPRINT, serial, URL,
    )  # fmt: skip
    assert cache_key("sha1", FINGERPRINT, serial + 1, URL) != key
    assert cache_key("sha256", FINGERPRINT, serial, URL) != key
    assert cache_key("sha1", FINGERPRINT, serial, URL + "x") != key
    assert cache_key("sha1", bytes(32), serial, URL) != key


ANSWERS = [
    RevocationOutcome(URL, RevocationStatus(CertStatus.GOOD, T, T + dt.timedelta(hours=1),
                                            T + dt.timedelta(hours=1)), latency=0.0123),
    RevocationOutcome(URL, RevocationStatus(CertStatus.UNKNOWN, T, None, T + dt.timedelta(seconds=300.5))),
    RevocationOutcome(URL, RevocationStatus(CertStatus.REVOKED, T, T, T, T - dt.timedelta(days=3),
                                            "keyCompromise")),
    RevocationOutcome(URL, RevocationStatus(CertStatus.REVOKED, T, None, T, T, None)),
    RevocationOutcome(URL, RevocationStatus(CertStatus.REVOKED, T, None, T, T, "a reason é")),
    RevocationOutcome(URL, failure=RevocationFailure.TIMEOUT, detail="no answer in 2.0 s — ü",
                      latency=2.0),
]  # fmt: skip


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_answer_round_trips_exactly(answer: RevocationOutcome) -> None:
    codec = OutcomeCodec()
    key = cache_key("sha1", FINGERPRINT, 42, URL)
    packed = codec.pack(key, answer)
    assert codec.unpack(key, packed) == answer
    text = answer.detail or (answer.status.revocation_reason if answer.status else "") or ""
    assert len(packed) <= 42 + len(text.encode())  # a few dozen bytes, text aside
