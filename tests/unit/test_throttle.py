"""Failed key checks per client address (app/auth/throttle.py), on a fake clock."""

from __future__ import annotations

from app.auth.throttle import FailureThrottle


def test_an_address_is_refused_after_its_limit_until_its_oldest_failure_is_a_minute_old() -> None:
    now = [1000.0]
    throttle = FailureThrottle(3, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
        now[0] += 10
    assert throttle.retry_after("10.0.0.1") == 30  # the first failure counts until 1060
    assert throttle.retry_after("10.0.0.2") is None  # another address is not concerned
    now[0] = 1060.0
    assert throttle.retry_after("10.0.0.1") is None  # one failure has left the window


def test_a_flood_from_many_addresses_keeps_the_memory_bounded() -> None:
    now = [1000.0]
    throttle = FailureThrottle(2, max_addresses=100, clock=lambda: now[0])
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    now[0] += 61  # 10.0.0.1's failures are over: it is the first forgotten
    for n in range(99):
        throttle.failed(f"192.0.2.{n}")
    throttle.failed("198.51.100.1")
    assert len(throttle._failures) == 100
    for n in range(500):
        throttle.failed(f"203.0.113.{n}")
    assert len(throttle._failures) <= 100
