"""The per-origin circuit breaker, driven by a fake clock."""

from __future__ import annotations

import pytest

from services.errors import CircuitOpenError
from services.resilience.breaker import CircuitBreakers

ORIGIN = "https://api.example.test:443"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fail(breakers: CircuitBreakers, times: int) -> None:
    for _ in range(times):
        breakers.record(ORIGIN, "failure", breakers.check(ORIGIN))


def test_breaker_opens_after_consecutive_failures_only():
    breakers = CircuitBreakers(threshold=3, cooldown=10, clock=Clock())
    fail(breakers, 2)
    breakers.record(ORIGIN, "success", breakers.check(ORIGIN))
    fail(breakers, 2)
    assert breakers.state(ORIGIN) == "closed"
    fail(breakers, 1)
    assert breakers.state(ORIGIN) == "open"


def test_breaker_open_error_says_when_to_retry():
    clock = Clock()
    breakers = CircuitBreakers(threshold=1, cooldown=10, clock=clock)
    fail(breakers, 1)
    clock.now += 4
    with pytest.raises(CircuitOpenError) as caught:
        breakers.check(ORIGIN)
    assert caught.value.retry_after == pytest.approx(6)


def test_breaker_probe_without_verdict_lets_the_next_caller_probe():
    clock = Clock()
    breakers = CircuitBreakers(threshold=1, cooldown=10, clock=clock)
    fail(breakers, 1)
    clock.now += 10
    assert breakers.check(ORIGIN) is True
    with pytest.raises(CircuitOpenError):
        breakers.check(ORIGIN)
    breakers.record(ORIGIN, "neutral", probe=True)  # e.g. the probe was cancelled
    assert breakers.check(ORIGIN) is True
    breakers.record(ORIGIN, "success", probe=True)
    assert breakers.state(ORIGIN) == "closed"
    assert breakers.states() == {}


def test_breaker_success_of_an_older_attempt_does_not_close_an_open_circuit():
    breakers = CircuitBreakers(threshold=1, cooldown=10, clock=Clock())
    fail(breakers, 1)
    breakers.record(ORIGIN, "success", probe=False)
    assert breakers.state(ORIGIN) == "open"


def test_breaker_threshold_zero_disables_it():
    breakers = CircuitBreakers(threshold=0, cooldown=10, clock=Clock())
    fail(breakers, 50)
    assert breakers.check(ORIGIN) is False
    assert breakers.states() == {}
