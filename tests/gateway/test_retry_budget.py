"""The retry budget: tokens from requests (ratio) and time (min_per_s), capped; a retry spends one."""

from __future__ import annotations

import pytest

from gateway.retry_budget import RetryBudget

T0 = 1000.0


def empty(ratio: float = 0.2, min_per_s: float = 0.0, cap: float = 20.0) -> RetryBudget:
    """A budget with no tokens, its clock at T0."""
    return RetryBudget(ratio=ratio, min_per_s=min_per_s, cap=cap, tokens=0.0, last=T0)


def spend_all(budget: RetryBudget, now: float, limit: int = 1000) -> int:
    n = 0
    while n < limit and budget.try_spend(now):
        n += 1
    return n


def test_defaults() -> None:
    b = RetryBudget(ratio=0.2, min_per_s=10.0)
    assert (b.cap, b.tokens, b.last) == (20.0, 10.0, 0.0)


def test_initial_tokens_can_be_spent_one_each() -> None:
    b = RetryBudget(ratio=0.0, min_per_s=0.0, tokens=3.0, last=T0)
    assert [b.try_spend(T0) for _ in range(4)] == [True, True, True, False]
    assert b.tokens == 0.0


def test_empty_budget_refuses() -> None:
    b = empty()
    assert not b.try_spend(T0)
    assert b.tokens == 0.0  # a refused retry costs nothing


@pytest.mark.parametrize(
    ("ratio", "requests", "retries"),
    [(0.2, 5, 1), (0.2, 4, 0), (0.25, 40, 10), (0.5, 3, 1), (1.0, 7, 7), (0.0, 100, 0)],
)
def test_requests_earn_ratio_tokens(ratio: float, requests: int, retries: int) -> None:
    b = empty(ratio=ratio)
    for _ in range(requests):
        b.on_request(T0)
    assert b.tokens == pytest.approx(ratio * requests)
    assert spend_all(b, T0) == retries


@pytest.mark.parametrize(("elapsed_s", "retries"), [(0.0, 0), (0.09, 0), (0.1, 1), (0.55, 5), (1.0, 10)])
def test_time_earns_min_per_s_tokens(elapsed_s: float, retries: int) -> None:
    b = empty(ratio=0.0, min_per_s=10.0)
    assert spend_all(b, T0 + elapsed_s + 1e-9) == retries


def test_tokens_are_capped() -> None:
    b = empty(ratio=1.0, min_per_s=100.0, cap=5.0)
    for _ in range(50):
        b.on_request(T0)
    assert b.tokens == 5.0
    b.on_request(T0 + 60.0)
    assert b.tokens == 5.0
    assert spend_all(b, T0 + 60.0) == 5


def test_time_refill_is_capped() -> None:
    b = empty(ratio=0.0, min_per_s=10.0, cap=3.0)
    assert spend_all(b, T0 + 3600.0) == 3


def test_retries_stay_a_bounded_fraction_of_traffic() -> None:
    # 1000 requests over 10 s, each of which would like to retry: with ratio
    # 0.1 and 1 token/s the retries are bounded by 0.1 * 1000 + 10 s * 1.
    b = empty(ratio=0.1, min_per_s=1.0)
    retries = 0
    for i in range(1000):
        now = T0 + i * 0.01
        b.on_request(now)
        retries += b.try_spend(now)
    assert 100 <= retries <= 110


def test_refill_counts_each_interval_once() -> None:
    b = empty(ratio=0.0, min_per_s=1.0)
    b.on_request(T0 + 1.0)
    b.on_request(T0 + 1.0)
    assert b.tokens == pytest.approx(1.0)
    b.try_spend(T0 + 2.0)  # +1, -1
    assert b.tokens == pytest.approx(1.0)
    assert b.last == T0 + 2.0


def test_clock_going_back_adds_nothing() -> None:
    b = empty(ratio=0.0, min_per_s=1.0)
    assert not b.try_spend(T0 - 50.0)
    assert b.tokens == 0.0
