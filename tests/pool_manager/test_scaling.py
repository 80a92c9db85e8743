"""The Scaler: the pool's memory between autoscaler ticks."""

from __future__ import annotations

import pytest

from pool_manager.autoscaler import ScalePolicy
from pool_manager.registry import FunctionSpec
from pool_manager.scaling import MAX_LOAD_BACKOFF_S, Scaler

POLICY = ScalePolicy()


def make(policy: ScalePolicy = POLICY, prewarm: int = 1, prewarm_max: int = 4) -> Scaler:
    return Scaler(policy, prewarm, prewarm_max)


# -- record ---------------------------------------------------------------------


def test_record_appends_a_sample_per_named_function_and_zero_for_the_unreported() -> None:
    scaler = make()
    scaler.record(["a", "b"], {"a": 2}, 10.0)
    scaler.record(["a", "b"], {"a": 3.5, "b": 1}, 11.0)
    assert list(scaler.functions["a"].samples) == [(10.0, 2.0), (11.0, 3.5)]
    assert list(scaler.functions["b"].samples) == [(10.0, 0.0), (11.0, 1.0)]
    assert all(type(v) is float for _, v in scaler.functions["a"].samples)


def test_record_ignores_load_for_functions_it_was_not_asked_about() -> None:
    scaler = make()
    scaler.record(["a"], {"a": 1, "ghost": 7}, 10.0)
    assert set(scaler.functions) == {"a"}


def test_record_clamps_negative_load_to_zero() -> None:
    scaler = make()
    scaler.record(["a"], {"a": -3}, 10.0)
    assert list(scaler.functions["a"].samples) == [(10.0, 0.0)]
    assert scaler.functions["a"].last_active == 10.0  # first seen, not active


def test_last_active_moves_only_on_load() -> None:
    scaler = make()
    scaler.record(["a"], {}, 10.0)
    assert scaler.functions["a"].last_active == 10.0  # first seen: a full grace period from now
    scaler.record(["a"], {"a": 2}, 15.0)
    assert scaler.functions["a"].last_active == 15.0
    for now in (16.0, 20.0, 40.0):
        scaler.record(["a"], {"a": 0}, now)
    assert scaler.functions["a"].last_active == 15.0
    scaler.record(["a"], {"a": 0.5}, 41.0)
    assert scaler.functions["a"].last_active == 41.0


def test_decide_prunes_samples_older_than_the_functions_stable_window() -> None:
    scaler = make()  # stable window 60 s
    for now in range(201):
        scaler.record(["a"], {"a": now}, float(now))
    assert len(scaler.functions["a"].samples) == 201  # record keeps everything (capped)
    scaler.decide(FunctionSpec(name="a"), ready=1, budget=10, now=200.0)
    samples = scaler.functions["a"].samples
    assert samples[0] == (140.0, 140.0)  # exactly 60 s old is kept
    assert samples[-1] == (200.0, 200.0)


def test_first_seen_function_gets_a_full_grace_period() -> None:
    scaler = make()
    spec = FunctionSpec(name="f")
    scaler.record(["f"], {}, 1000.0)
    # one container up and no load at all: kept for the 30 s grace, then released
    assert scaler.decide(spec, ready=1, budget=10, now=1029.0).desired == 1
    assert scaler.decide(spec, ready=1, budget=10, now=1030.0).desired == 0


def test_pruning_keeps_a_functions_own_longer_stable_window() -> None:
    scaler = make()
    spec = FunctionSpec(name="f", autoscale={"stable_window_s": 300.0, "scale_to_zero_grace_s": 600.0})
    for now in range(201):
        scaler.record(["f"], {"f": 3 if now < 60 else 0}, float(now))
    decision = scaler.decide(spec, ready=1, budget=10, now=200.0)
    # 300 s window over t=0..200: 60 samples of 3 and 141 of 0
    assert decision.stable_concurrency == pytest.approx(180 / 201)
    assert decision.desired == 1


# -- load failure backoff --------------------------------------------------------


def test_load_failure_backoff_doubles_up_to_a_minute() -> None:
    scaler = make()
    now = 100.0
    delays = []
    for _ in range(9):
        assert scaler.may_load("f", now)
        scaler.load_failed("f", now)
        retry = scaler.functions["f"].retry_load_at
        delays.append(retry - now)
        assert not scaler.may_load("f", now)
        assert not scaler.may_load("f", retry - 0.01)
        assert scaler.may_load("f", retry)
        now = retry
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert MAX_LOAD_BACKOFF_S == 60.0
    assert scaler.functions["f"].load_failures == 9


def test_may_load_an_unknown_or_healthy_function() -> None:
    scaler = make()
    assert scaler.may_load("never-seen", 0.0)
    scaler.record(["f"], {"f": 1}, 5.0)
    assert scaler.may_load("f", 5.0)


def test_reset_backoff_allows_loading_at_once() -> None:
    scaler = make()
    for _ in range(4):
        scaler.load_failed("f", 100.0)
    assert not scaler.may_load("f", 107.0)  # 8 s backoff
    scaler.reset_backoff("f")
    assert scaler.may_load("f", 100.0)
    assert scaler.functions["f"].load_failures == 0
    scaler.load_failed("f", 200.0)  # and the next failure starts the ladder again
    assert scaler.functions["f"].retry_load_at == 201.0


def test_reset_backoff_of_an_unknown_function_is_harmless() -> None:
    scaler = make()
    scaler.reset_backoff("nobody")
    assert scaler.functions == {}


def test_load_succeeded_clears_failures_and_counts_cold_starts() -> None:
    scaler = make(prewarm=1, prewarm_max=3)
    scaler.load_failed("f", 10.0)
    scaler.load_failed("f", 11.0)
    scaler.load_succeeded("f", 20.0, cold=False)
    assert scaler.functions["f"].load_failures == 0
    assert scaler.may_load("f", 20.0)
    assert list(scaler.cold_starts) == []
    assert scaler.prewarm_wanted(20.0) == 1
    for at in (21.0, 22.0, 23.0, 24.0):
        scaler.load_succeeded("f", at, cold=True)
    assert list(scaler.cold_starts) == [21.0, 22.0, 23.0, 24.0]
    assert scaler.prewarm_wanted(24.0) == 3
    assert scaler.prewarm_wanted(82.0) == 2  # 21 aged out of the minute
    assert scaler.prewarm_wanted(85.0) == 1


def test_the_prewarm_window_is_configurable() -> None:
    scaler = Scaler(POLICY, 1, 4, prewarm_window_s=5.0)
    for at in (1.0, 2.0):
        scaler.load_succeeded("f", at, cold=True)
    assert scaler.prewarm_wanted(2.0) == 2
    assert scaler.prewarm_wanted(6.5) == 1  # 1.0 aged out of the 5 s window


# -- waiting --------------------------------------------------------------------


@pytest.mark.parametrize(("loads", "capacity", "expected"), [
    pytest.param([5.0], 4, True, id="more-load-than-slots"),
    pytest.param([4.0], 4, False, id="exactly-full"),
    pytest.param([9.0, 2.0], 4, False, id="only-the-latest-counts"),
    pytest.param([2.0, 9.0], 4, True, id="latest-over"),
    pytest.param([1.0], 0, True, id="no-ready-slots"),
    pytest.param([0.0], 0, False, id="no-load-no-slots"),
])
def test_waiting(loads: list[float], capacity: int, expected: bool) -> None:
    scaler = make()
    for i, value in enumerate(loads):
        scaler.record(["f"], {"f": value}, float(i))
    assert scaler.waiting("f", capacity) is expected


def test_waiting_without_samples() -> None:
    scaler = make()
    assert scaler.waiting("unknown", 0) is False
    scaler.load_failed("f", 0.0)  # known, but no report yet
    assert scaler.waiting("f", 0) is False


# -- policy and decisions --------------------------------------------------------


def test_policy_for_without_overrides_is_the_global_policy() -> None:
    scaler = make()
    assert scaler.policy_for(FunctionSpec(name="f")) is scaler.policy


def test_policy_for_applies_overrides_only_to_that_function() -> None:
    scaler = make()
    spec = FunctionSpec(name="f", autoscale={"stable_window_s": 30.0, "target_utilization": 0.5})
    policy = scaler.policy_for(spec)
    assert policy == ScalePolicy(stable_window_s=30.0, target_utilization=0.5)
    assert policy.panic_window_s == POLICY.panic_window_s
    assert scaler.policy == ScalePolicy()  # the global policy is untouched


def test_decide_uses_the_functions_overrides() -> None:
    scaler = make()
    plain = FunctionSpec(name="plain")
    tuned = FunctionSpec(name="tuned", autoscale={"target_utilization": 0.5})
    for now in range(61):
        scaler.record(["plain", "tuned"], {"plain": 3, "tuned": 3}, float(now))
    assert scaler.decide(plain, ready=3, budget=20, now=60.0).desired == 3
    assert scaler.decide(tuned, ready=6, budget=20, now=60.0).desired == 6


def test_decide_uses_the_spec_bounds() -> None:
    scaler = make()
    spec = FunctionSpec(name="f", concurrency=4, min_scale=2, max_scale=5)
    scaler.record(["f"], {"f": 40}, 0.0)
    d = scaler.decide(spec, ready=0, budget=20, now=0.0)
    assert d.desired == 5  # 40 / 4 = 10, capped
    assert "capped by max_scale 5" in d.reason
    idle = make()
    idle.record(["f"], {}, 0.0)
    assert idle.decide(spec, ready=0, budget=20, now=0.0).desired == 2


def test_decide_carries_panic_and_the_previous_decision_between_ticks() -> None:
    scaler = make()
    spec = FunctionSpec(name="f", max_scale=20)
    for now in range(10):
        scaler.record(["f"], {"f": 1}, float(now))
        assert scaler.decide(spec, ready=1, budget=20, now=float(now)).desired == 1
    scaler.record(["f"], {"f": 8}, 10.0)
    burst = scaler.decide(spec, ready=1, budget=20, now=10.0)
    assert (burst.desired, burst.panic_since) == (8, 10.0)
    assert scaler.functions["f"].panic_since == 10.0
    assert scaler.describe("f") == {
        "desired": 8, "reason": burst.reason, "panic": True, "load_failures": 0,
    }
    # Load falls back at once and only 2 containers are ready yet: panic holds the previous 8.
    for now in range(11, 20):
        scaler.record(["f"], {"f": 1}, float(now))
        assert scaler.decide(spec, ready=2, budget=20, now=float(now)).desired == 8
    for now in range(20, 71):
        scaler.record(["f"], {"f": 1}, float(now))
        scaler.decide(spec, ready=8, budget=20, now=float(now))
    assert scaler.functions["f"].panic_since is None  # a stable window after the burst
    assert scaler.describe("f")["panic"] is False
    assert scaler.describe("f")["desired"] == 4  # halved at most


def test_describe_before_any_decision() -> None:
    scaler = make()
    assert scaler.describe("f") == {"desired": None, "reason": "no decision yet", "panic": False}
    scaler.record(["f"], {"f": 1}, 0.0)
    assert scaler.describe("f")["desired"] is None


def test_forget_drops_all_memory() -> None:
    scaler = make()
    scaler.record(["f"], {"f": 3}, 0.0)
    scaler.load_failed("f", 0.0)
    scaler.forget("f")
    scaler.forget("f")  # twice is fine
    assert "f" not in scaler.functions
    assert scaler.may_load("f", 0.0)
    scaler.record(["f"], {}, 50.0)
    assert list(scaler.functions["f"].samples) == [(50.0, 0.0)]
    assert scaler.functions["f"].last_active == 50.0
