"""The circuit breaker's state machine, driven by an explicit clock."""

from __future__ import annotations

import pytest

from gateway.breaker import Breaker, State

T0 = 1000.0


def opened(threshold: int = 3, open_s: float = 5.0, at: float = T0) -> Breaker:
    b = Breaker(threshold=threshold, open_s=open_s)
    for i in range(threshold - 1):
        assert b.on_failure(at - threshold + 1 + i) is None
    assert b.on_failure(at) is State.OPEN
    return b


def test_new_breaker_is_closed_and_allows() -> None:
    b = Breaker()
    assert (b.state, b.failures, b.probing) == (State.CLOSED, 0, False)
    assert b.allows(0.0)
    assert b.allows(T0)


@pytest.mark.parametrize("threshold", [1, 2, 3, 5])
def test_opens_after_threshold_consecutive_failures(threshold: int) -> None:
    b = Breaker(threshold=threshold, open_s=5.0)
    for i in range(threshold - 1):
        assert b.on_failure(T0 + i) is None
        assert b.state is State.CLOSED
        assert b.allows(T0 + i)
    assert b.on_failure(T0 + 10) is State.OPEN
    assert b.state is State.OPEN
    assert b.opened_at == T0 + 10
    assert not b.allows(T0 + 10)


def test_stays_closed_below_threshold() -> None:
    b = Breaker(threshold=3)
    assert b.on_failure(T0) is None
    assert b.on_failure(T0 + 1) is None
    assert b.state is State.CLOSED
    assert b.failures == 2
    assert b.allows(T0 + 1)


def test_success_in_between_resets_the_count() -> None:
    b = Breaker(threshold=3)
    b.on_failure(T0)
    b.on_failure(T0 + 1)
    assert b.on_success(T0 + 2) is None  # no transition: it was closed
    assert b.failures == 0
    assert b.on_failure(T0 + 3) is None
    assert b.on_failure(T0 + 4) is None
    assert b.state is State.CLOSED
    assert b.on_failure(T0 + 5) is State.OPEN


@pytest.mark.parametrize(
    ("elapsed_s", "allowed"),
    [(0.0, False), (1.0, False), (4.999, False), (5.0, True), (5.001, True), (60.0, True)],
)
def test_open_refuses_until_open_s_passed(elapsed_s: float, allowed: bool) -> None:
    b = opened(open_s=5.0)
    assert b.allows(T0 + elapsed_s) is allowed
    assert b.state is State.OPEN  # allows() never changes state


def test_dispatch_before_open_s_does_not_start_a_probe() -> None:
    b = opened(open_s=5.0)
    assert b.on_dispatch(T0 + 1.0) is None
    assert b.state is State.OPEN
    assert not b.probing
    assert b.allows(T0 + 5.0)


def test_exactly_one_half_open_probe() -> None:
    b = opened(open_s=5.0)
    now = T0 + 5.0
    assert b.allows(now)
    assert b.on_dispatch(now) is State.HALF_OPEN  # the change is reported once
    assert b.on_dispatch(now) is None
    assert b.state is State.HALF_OPEN
    assert b.probing
    # every other request is refused while the probe is out, however late
    for later in (now, now + 1, now + 100):
        assert not b.allows(later)


@pytest.mark.parametrize("probe_at", [T0 + 5.0, T0 + 30.0])
def test_probe_success_closes(probe_at: float) -> None:
    b = opened(open_s=5.0)
    b.on_dispatch(probe_at)
    assert b.on_success(probe_at + 0.2) is State.CLOSED
    assert (b.state, b.failures, b.probing) == (State.CLOSED, 0, False)
    assert b.allows(probe_at + 0.2)
    # closed again: a fresh threshold of failures is needed to reopen
    assert b.on_failure(probe_at + 1) is None
    assert b.on_failure(probe_at + 2) is None
    assert b.on_failure(probe_at + 3) is State.OPEN


def test_probe_failure_reopens_with_fresh_opened_at() -> None:
    b = opened(open_s=5.0)
    probe_at = T0 + 7.0
    b.on_dispatch(probe_at)
    assert b.on_failure(probe_at + 0.5) is State.OPEN
    assert b.state is State.OPEN
    assert b.opened_at == probe_at + 0.5
    assert not b.probing
    # the open period counts from the probe's failure, not the first opening
    assert not b.allows(probe_at + 0.5 + 4.9)
    assert b.allows(probe_at + 0.5 + 5.0)
    # and another single probe is then allowed
    b.on_dispatch(probe_at + 0.5 + 5.0)
    assert b.state is State.HALF_OPEN
    assert not b.allows(probe_at + 0.5 + 5.0)


def test_one_probe_failure_reopens_regardless_of_threshold() -> None:
    b = opened(threshold=5, open_s=2.0)
    b.on_dispatch(T0 + 2.0)
    assert b.on_failure(T0 + 2.1) is State.OPEN


def test_transitions_only_are_announced() -> None:
    b = Breaker(threshold=2, open_s=1.0)
    events = [
        b.on_success(T0),  # closed -> closed
        b.on_failure(T0 + 1),  # 1 of 2
        b.on_failure(T0 + 2),  # opens
        b.on_failure(T0 + 2.5),  # a late failure while open: no transition
    ]
    assert events == [None, None, State.OPEN, None]
    assert b.opened_at == T0 + 2  # the late failure did not extend the open period
    b.on_dispatch(T0 + 3)
    assert b.on_success(T0 + 3.1) is State.CLOSED
    assert b.on_success(T0 + 3.2) is None


def test_allows_does_not_change_state() -> None:
    b = opened(open_s=5.0)
    for _ in range(3):
        assert b.allows(T0 + 6)
    assert (b.state, b.probing) == (State.OPEN, False)


def test_trip_opens_at_once_and_reports_the_change_only_once() -> None:
    b = Breaker(threshold=3, open_s=5.0)
    assert b.trip(now=10.0) is State.OPEN
    assert not b.allows(now=12.0)
    assert b.trip(now=11.0) is None  # already open; the open period restarts
    assert b.opened_at == 11.0
    assert b.allows(now=16.0)
