"""Callbacks: URL checks, the backoff schedule, and the headers a receiver sees."""

from __future__ import annotations

import pytest

from gateway.callbacks import BadCallbackUrl, backoff_s, callback_headers, check_callback_url


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/done",
    "https://hooks.example.com/x?y=1",
    "http://user:pw@localhost/cb",
    "http://[::1]:8080/",
])
def test_good_callback_urls(url: str) -> None:
    assert check_callback_url(url) == url


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://example.com/x", "http://"),
    ("file:///etc/passwd", "http://"),
    ("/relative/path", "http://"),
    ("http:///nohost", "no host"),
    ("http://example.com:99999/", "port"),
    ("http://example.com/a b", "spaces"),
    ("http://example.com/\n", "control"),
    ("http://example.com/" + "a" * 3000, "longer"),
])
def test_bad_callback_urls(url: str, why: str) -> None:
    with pytest.raises(BadCallbackUrl, match=why):
        check_callback_url(url)


def test_allowed_hosts_limit_where_results_go() -> None:
    allowed = frozenset({"127.0.0.1", "receiver.internal"})
    assert check_callback_url("http://Receiver.Internal/x", allowed)
    with pytest.raises(BadCallbackUrl, match="not allowed"):
        check_callback_url("http://169.254.169.254/latest", allowed)


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    ceilings = [backoff_s(n, 1.0, 30.0, lambda: 1.0) for n in range(1, 9)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_is_full_jitter_below_the_ceiling() -> None:
    assert backoff_s(3, 0.5, 100.0, lambda: 0.0) == 0.0
    assert backoff_s(3, 0.5, 100.0, lambda: 0.5) == 1.0  # half of the 2.0 ceiling
    draws = iter([0.25, 0.75])
    assert [backoff_s(4, 1.0, 100.0, lambda: next(draws)) for _ in range(2)] == [2.0, 6.0]


def test_backoff_survives_huge_attempt_numbers() -> None:
    assert backoff_s(10_000, 1.0, 300.0, lambda: 1.0) == 300.0
    assert backoff_s(0, 1.0, 300.0, lambda: 1.0) == 1.0


def test_callback_headers_carry_the_results_headers_id_status_and_signature() -> None:
    result = [["Content-Type", "application/json"], ["X-Trace", "a"], ["X-Trace", "b"],
              ["Content-Length", "99"], ["Connection", "close"],
              ["X-Hearth-Signature", "sha256=forged"], ["x-call-id", "forged"]]
    headers = callback_headers("c1", "fn", 201, result, "sha256=ab")
    assert headers == {
        "Content-Type": "application/json", "X-Trace": "a, b", "X-Call-Id": "c1",
        "X-Function-Name": "fn", "X-Function-Status": "201", "X-Hearth-Signature": "sha256=ab",
    }
