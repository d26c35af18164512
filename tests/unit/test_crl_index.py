"""The compact index of a CRL's revoked serials: the same answers as a dict, in ≤ 64 bytes an
entry, and a pipe format that refuses what does not add up."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.core.revocation import CertStatus
from authz.demo.pki import LabPki
from authz.revocation.crl import verify_crl
from authz.revocation.crl_index import (
    REASONS,
    SERIAL_BYTES,
    CrlIndex,
    RevokedSerials,
    from_micros,
    micros,
)
from tests.unit.test_crl import NOW, build_crl

LOW = (1 << 64) - 1

# Serials as CAs issue them (small sequential, 20 random octets), as RFC 5280 forbids but some
# CAs issue (negative, longer than 20 octets), and pairs that share their low 64 bits.
serials = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=(1 << 159) - 1),
    st.integers(min_value=-(1 << 170), max_value=-1),
    st.integers(min_value=1 << 160, max_value=1 << 200),
    st.integers(min_value=1, max_value=(1 << 96) - 1).map(lambda s: (s << 64) | 12345),
)
entries = st.lists(
    st.tuples(
        serials,
        st.integers(min_value=0, max_value=micros(NOW)),
        st.integers(min_value=0, max_value=len(REASONS) - 1),
    ),
    max_size=60,
)


def through_pipe(index: RevokedSerials) -> RevokedSerials:
    """As the verifying process sends it: each buffer as plain bytes."""
    header, buffers = index.to_parts()
    return RevokedSerials.from_parts(header, [bytes(buffer) for buffer in buffers])


@settings(max_examples=300, deadline=None)
@given(entries, st.lists(serials, max_size=30))
def test_every_lookup_answers_as_a_dict_would(
    listed: list[tuple[int, int, int]], others: list[int]
) -> None:
    expected = {serial: (when, code) for serial, when, code in listed}
    index = RevokedSerials.build(listed)
    received = through_pipe(index)
    assert len(index) == len(received) == len(expected)
    for serial in [*expected, *others, *(s ^ (1 << 100) for s in expected)]:
        assert index.get(serial) == received.get(serial) == expected.get(serial), serial


def test_serials_sharing_their_low_64_bits_are_told_apart_by_all_their_octets() -> None:
    twins = [(k << 64) | 0xABCDEF for k in range(1, 50)]
    index = RevokedSerials.build((s, i, 1) for i, s in enumerate(twins[::2]))
    for i, serial in enumerate(twins):
        assert index.get(serial) == ((i // 2, 1) if i % 2 == 0 else None)
    assert index.get(0xABCDEF) is None  # the low bits alone are not a serial listed


def test_a_hundred_thousand_entries_hold_under_64_bytes_each() -> None:
    rng = random.Random(7)  # noqa: S311 - serials for a test, reproducible
    listed = [(rng.getrandbits(159), rng.getrandbits(50), rng.randrange(len(REASONS)))
              for _ in range(100_000)]  # fmt: skip
    index = RevokedSerials.build(listed)
    assert index.nbytes() / len(index) <= 64
    for serial, when, code in rng.sample(listed, 1000):
        assert index.get(serial) == (when, code)


def test_the_crl_s_dates_and_reasons_come_back_exactly(pki: LabPki) -> None:
    crl = build_crl(
        pki.issuing,
        {7: x509.ReasonFlags.key_compromise, 1 << 158: None, 9: x509.ReasonFlags.superseded},
    )
    index = verify_crl(crl, pki.issuing.cert, NOW)
    header, buffers = index.to_parts()
    received = CrlIndex.from_parts(header, [bytes(b) for b in buffers])
    revoked_at = NOW - dt.timedelta(minutes=5) - dt.timedelta(hours=1)
    for serial, reason in ((7, "keyCompromise"), (1 << 158, None), (9, "superseded")):
        status = received.status(serial)
        assert (status.status, status.revocation_time, status.revocation_reason) == (
            CertStatus.REVOKED, revoked_at, reason,
        )  # fmt: skip
    assert received.status(8).status is CertStatus.GOOD
    assert (received.this_update, received.next_update, received.valid_until) == (
        index.this_update, index.next_update, index.valid_until,
    )  # fmt: skip


def test_microseconds_round_trip() -> None:
    when = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    assert from_micros(micros(when)) == when


@pytest.mark.parametrize(
    "spoil",
    [
        lambda parts: parts.__setitem__(0, parts[0][:-8]),  # one key short
        lambda parts: parts.__setitem__(1, parts[1] + b"\0"),  # a serial octet too many
        lambda parts: parts.__setitem__(3, b"\xff" * len(parts[3])),  # not a reason code
        lambda parts: parts.__setitem__(4, b"[[1, 2, 200]]"),  # an odd entry's reason
    ],
    ids=["keys", "serials", "reasons", "odd-reason"],
)
def test_parts_that_do_not_add_up_are_refused(spoil: object) -> None:
    index = RevokedSerials.build([(5, 1, 1), (9, 2, 0)])
    header, buffers = index.to_parts()
    parts = [bytes(b) for b in buffers]
    spoil(parts)  # type: ignore[operator]
    with pytest.raises(ValueError):
        RevokedSerials.from_parts(header, parts)


def test_an_index_from_another_byte_order_is_refused() -> None:
    header, buffers = RevokedSerials.build([(5, 1, 1)]).to_parts()
    header["byteorder"] = "big" if header["byteorder"] == "little" else "little"
    with pytest.raises(ValueError):
        RevokedSerials.from_parts(header, [bytes(b) for b in buffers])


def test_serial_width_is_rfc_5280_s() -> None:
    assert SERIAL_BYTES == 20
    index = RevokedSerials.build([((1 << 160) - 1, 0, 0), (1 << 160, 1, 0)])
    assert index.get((1 << 160) - 1) == (0, 0) and index.get(1 << 160) == (1, 0)
    assert index.get(((1 << 160) - 1) & LOW) is None
