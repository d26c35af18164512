from __future__ import annotations

import pytest

from authz.revocation.fetch import CircuitBreaker
from authz.revocation.loading import host_allowed


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_then_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_seconds=10, clock=clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.record(False)
    assert not breaker.allow()  # open: fail fast
    clock.now += 10.1
    assert breaker.allow()  # half-open: one probe
    assert not breaker.allow()  # and only one
    breaker.record(False)
    assert not breaker.allow()  # probe failed: open again
    clock.now += 10.1
    assert breaker.allow()
    breaker.record(True)  # probe succeeded: closed
    assert breaker.allow() and breaker.allow()


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=3, open_seconds=10, clock=Clock())
    for _ in range(2):
        breaker.record(False)
    breaker.record(True)
    for _ in range(2):
        breaker.record(False)
    assert breaker.allow()


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("ocsp.lab.example", ("ocsp.lab.example",), True),
        ("OCSP.Lab.Example.", ("ocsp.lab.example",), True),
        ("evil.example", ("ocsp.lab.example",), False),
        ("ocsp.lab.example.evil", ("ocsp.lab.example",), False),
        ("10.0.0.7", ("10.0.0.0/24",), True),
        ("10.0.1.7", ("10.0.0.0/24",), False),
        ("169.254.169.254", ("10.0.0.0/8", "ocsp.lab.example"), False),
        ("::1", ("::1/128",), True),
        # A name is never matched by a network: its address could change after the check.
        ("localhost", ("127.0.0.0/8",), False),
    ],
)
def test_allowed_hosts(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected
