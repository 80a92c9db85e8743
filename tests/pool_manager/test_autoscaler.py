"""The autoscaler's pure decision, driven over simulated time.

``simulate`` plays the pool's part: one gateway report per 1-second tick,
``decide`` on every tick, the memory (panic_since, previous desired) carried
from one decision to the next, and containers becoming ready ``lag`` ticks
after they were first desired. No test sleeps; time is a number we move.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from pool_manager.autoscaler import (
    POLICY_LIMITS,
    Decision,
    Observed,
    ScalePolicy,
    ScaleSpec,
    decide,
    policy_errors,
    prewarm_target,
)

Load = Callable[[float], float]
DEFAULT = ScalePolicy()


# -- the simulator ------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    now: float
    load: float
    ready: int
    decision: Decision

    @property
    def desired(self) -> int:
        return self.decision.desired

    @property
    def panicking(self) -> bool:
        return self.decision.panic_since is not None


def simulate(
    spec: ScaleSpec, load: Load, seconds: int, *, budget: int = 100, lag: int = 1,
    reports: Callable[[float], bool] = lambda now: True,
) -> list[Tick]:
    """Decisions at now = 0, 1, ... seconds-1; ``ready`` is the desired count ``lag`` ticks ago."""
    samples: list[tuple[float, float]] = []
    last_active = 0.0  # a function first seen now gets a full grace period, as in Scaler.state
    panic_since: float | None = None
    previous_desired = 0
    desired: list[int] = []
    ticks: list[Tick] = []
    for i in range(seconds):
        now = float(i)
        value = max(0.0, float(load(now)))
        if reports(now):  # the gateway reports once a second, unless it is silent
            samples.append((now, value))
            if value > 0:
                last_active = now
            horizon = now - 2 * spec.policy.stable_window_s
            samples = [s for s in samples if s[0] >= horizon]
        ready = desired[i - lag] if i >= lag else 0
        observed = Observed(
            samples=tuple(samples), ready=ready, budget=budget, last_active=last_active,
            panic_since=panic_since, previous_desired=previous_desired,
        )
        decision = decide(spec, observed, now)
        panic_since, previous_desired = decision.panic_since, decision.desired
        desired.append(decision.desired)
        ticks.append(Tick(now, value, ready, decision))
    return ticks


def constant(value: float) -> Load:
    return lambda now: value


def step(before: float, after: float, at: float) -> Load:
    return lambda now: before if now < at else after


def until(value: float, stop: float) -> Load:
    """``value`` until ``stop``, then no load at all."""
    return lambda now: value if now < stop else 0.0


def bursts(base: float, *spikes: tuple[float, float, float]) -> Load:
    """``base`` load, with (start, length, peak) spikes on top."""
    def load(now: float) -> float:
        for start, length, peak in spikes:
            if start <= now < start + length:
                return peak
        return base
    return load


def check_invariants(spec: ScaleSpec, ticks: list[Tick], budget: int) -> None:
    """What must hold on every tick, whatever the load."""
    policy = spec.policy
    previous: Tick | None = None
    for tick in ticks:
        d, ready, at = tick.desired, tick.ready, tick.now
        ceiling = min(spec.max_scale, max(0, budget))
        assert 0 <= d <= ceiling, (at, d)
        assert d >= min(spec.min_scale, ceiling), (at, d)
        if d > spec.min_scale:
            assert d <= math.ceil(max(ready, 1) * policy.max_scale_up_rate), (at, ready, d)
        if d < ceiling:
            assert d >= math.floor(ready / policy.max_scale_down_rate), (at, ready, d)
        if previous is not None and previous.panicking and tick.panicking and d < ceiling:
            assert d >= previous.desired, f"scaled down from {previous.desired} to {d} in panic at {at}"
        previous = tick


# -- load profiles over time, table-driven -------------------------------------


@dataclass(frozen=True)
class Case:
    load: Load
    seconds: int
    desired: dict[int, int]  # tick -> desired count expected there
    concurrency: int = 1
    min_scale: int = 0
    max_scale: int = 10
    budget: int = 100
    policy: ScalePolicy = field(default_factory=ScalePolicy)
    reasons: dict[int, str] = field(default_factory=dict)  # tick -> text the reason contains
    panic: dict[int, bool] = field(default_factory=dict)  # tick -> in panic mode?

    def spec(self) -> ScaleSpec:
        return ScaleSpec(self.concurrency, self.min_scale, self.max_scale, self.policy)


SHORT_WINDOWS = replace(DEFAULT, stable_window_s=10.0, panic_window_s=2.0)

CASES = [
    pytest.param(Case(
        # 1 in flight for 20 s, then 8: the burst is met in the tick it is reported.
        load=step(1, 8, at=20), seconds=120,
        desired={0: 1, 19: 1, 20: 8, 21: 8, 79: 8, 80: 8, 119: 8},
        panic={19: False, 20: True, 79: True, 80: False},
        reasons={19: "stable: 1.0 in flight over 60 s", 20: "panic: 8.0 in flight over 6 s",
                 80: "stable: 8.0 in flight over 60 s"},
    ), id="step-1-to-8"),
    pytest.param(Case(
        load=step(1, 8, at=20), seconds=120, max_scale=6,
        desired={19: 1, 20: 6, 21: 6, 80: 6, 119: 6},
        reasons={20: "capped by max_scale 6", 80: "capped by max_scale 6"},
    ), id="step-1-to-8-capped-by-max-scale"),
    pytest.param(Case(
        # A 2-second spike to 10 over a base of 1: panic holds 10 for a stable
        # window past the spike, then the count halves per tick at most.
        load=bursts(1, (30, 2, 10)), seconds=150,
        desired={29: 1, 30: 10, 31: 10, 60: 10, 89: 10, 90: 5, 91: 2, 92: 1, 149: 1},
        panic={29: False, 30: True, 31: True, 89: True, 90: False, 149: False},
        reasons={30: "panic: 10.0", 89: "panic", 90: "scale-down limited to 5", 92: "stable: 1.0"},
    ), id="burst-panic-then-gradual-scale-down"),
    pytest.param(Case(
        # A second burst crossing the threshold again (25 >= 2 x 10 ready) re-arms panic.
        load=bursts(1, (30, 2, 10), (60, 1, 25)), seconds=150, max_scale=30,
        desired={30: 10, 59: 10, 60: 25, 61: 25, 119: 25, 120: 12},
        panic={89: True, 90: True, 119: True, 120: False},
        reasons={60: "panic: 25.0", 120: "scale-down limited to 12"},
    ), id="second-burst-rearms-panic"),
    pytest.param(Case(
        # A second burst below the threshold (15 < 2 x 10 ready) raises the count but
        # does not extend panic: it still ends a stable window after the first burst.
        load=bursts(1, (30, 2, 10), (60, 1, 15)), seconds=150, max_scale=30,
        desired={60: 15, 61: 15, 89: 15, 90: 7},
        panic={60: True, 89: True, 90: False},
        reasons={90: "scale-down limited to 7"},
    ), id="small-second-burst-does-not-rearm"),
    pytest.param(Case(
        load=constant(5), seconds=200,
        desired={0: 5, 59: 5, 60: 5, 120: 5, 199: 5},
        panic={0: True, 59: True, 60: False, 199: False},
        reasons={60: "stable: 5.0 in flight over 60 s", 199: "stable: 5.0"},
    ), id="sustained-5"),
    pytest.param(Case(
        # target 0.5 per container: 6 in flight need 12; from 0 ready at most 10 at once.
        load=constant(6), seconds=200, max_scale=20, policy=replace(DEFAULT, target_utilization=0.5),
        desired={0: 10, 1: 12, 60: 12, 199: 12},
        reasons={0: "scale-up limited to 10", 199: "stable: 6.0"},
    ), id="sustained-6-at-utilization-0.5"),
    pytest.param(Case(
        load=constant(4), seconds=200, policy=replace(DEFAULT, target_utilization=0.8),
        desired={0: 5, 60: 5, 199: 5},
    ), id="sustained-4-at-utilization-0.8"),
    pytest.param(Case(
        load=constant(10), seconds=200, concurrency=4,
        desired={0: 3, 1: 3, 60: 3, 199: 3},
        reasons={199: "stable: 10.0"},
    ), id="concurrency-4-ten-in-flight"),
    pytest.param(Case(
        load=constant(10), seconds=200, concurrency=4, policy=replace(DEFAULT, target_utilization=0.5),
        desired={0: 5, 199: 5},
    ), id="concurrency-4-at-utilization-0.5"),
    pytest.param(Case(
        # 3 slots x 60 % = 1.8 per container; 9 in flight need exactly 5 containers.
        load=constant(9), seconds=100, concurrency=3, policy=replace(DEFAULT, target_utilization=0.6),
        desired={0: 5, 60: 5, 99: 5},
    ), id="sustained-exact-multiple-of-fractional-target"),
    pytest.param(Case(
        # Default windows: the 60 s stable average still remembers the load (last
        # at t=9) when the 30 s grace has passed; the grace wins.
        load=until(1, 10), seconds=150,
        desired={9: 1, 38: 1, 39: 0, 40: 0, 149: 0},
        reasons={38: "stable", 39: "idle 30 s: scaled to zero"},
    ), id="idle-to-zero-after-grace-within-stable-window"),
    pytest.param(Case(
        # A grace shorter than the panic window: zero only once the panic window
        # has seen no load either, never between two reports of a busy function.
        load=until(1, 10), seconds=40, policy=replace(DEFAULT, scale_to_zero_grace_s=0.0),
        desired={0: 1, 9: 1, 15: 1, 16: 0, 39: 0},
        reasons={16: "idle 7 s: scaled to zero"},
    ), id="idle-zero-grace-waits-for-the-panic-window"),
    pytest.param(Case(
        # A 10 s stable window empties first; the idle rule keeps one until the grace passes.
        load=until(1, 10), seconds=100, policy=SHORT_WINDOWS,
        desired={9: 1, 19: 1, 20: 1, 38: 1, 39: 0, 99: 0},
        reasons={19: "stable", 20: "idle 11 s, zero after 30 s", 38: "idle 29 s, zero after 30 s",
                 39: "idle 30 s: scaled to zero"},
    ), id="idle-keeps-one-until-grace"),
    pytest.param(Case(
        load=until(1, 10), seconds=150, min_scale=1,
        desired={9: 1, 70: 1, 149: 1},
        reasons={70: "min_scale 1", 149: "min_scale 1"},
    ), id="idle-min-scale-1-never-zero"),
    pytest.param(Case(
        load=constant(0), seconds=100, min_scale=2,
        desired={0: 2, 1: 2, 99: 2},
        reasons={0: "min_scale 2", 99: "min_scale 2"},
    ), id="no-load-min-scale-2"),
    pytest.param(Case(
        # max_scale_up_rate 2: from 1 ready the count may only double per tick.
        load=step(1, 16, at=10), seconds=40, max_scale=50, policy=replace(DEFAULT, max_scale_up_rate=2.0),
        desired={9: 1, 10: 2, 11: 4, 12: 8, 13: 16, 39: 16},
        reasons={10: "scale-up limited to 2", 11: "scale-up limited to 4", 12: "scale-up limited to 8",
                 13: "panic: 16.0"},
    ), id="rate-limited-scale-up"),
    pytest.param(Case(
        # Short windows so the average empties fast: the count still only halves per tick.
        load=until(16, 20), seconds=60, max_scale=20,
        policy=replace(DEFAULT, stable_window_s=2.0, panic_window_s=1.0),
        desired={0: 10, 1: 16, 19: 16, 20: 11, 21: 6, 22: 3, 23: 1, 24: 1, 48: 1, 49: 0},
        reasons={0: "scale-up limited to 10", 22: "scale-down limited to 3", 23: "scale-down limited to 1",
                 24: "idle 5 s, zero after 30 s", 49: "scaled to zero"},
    ), id="rate-limited-scale-down"),
    pytest.param(Case(
        load=step(1, 8, at=20), seconds=100, budget=5,
        desired={19: 1, 20: 5, 21: 5, 99: 5},
        reasons={20: "panic: 8.0 in flight over 6 s; capped by the host's container budget",
                 99: "capped by the host's container budget"},
    ), id="budget-caps-step"),
    pytest.param(Case(
        load=constant(3), seconds=30, budget=0, min_scale=1,
        desired={0: 0, 29: 0},
        reasons={0: "budget"},
    ), id="budget-exhausted-beats-min-scale"),
]


@pytest.mark.parametrize("case", CASES)
def test_load_profile(case: Case) -> None:
    spec = case.spec()
    ticks = simulate(spec, case.load, case.seconds, budget=case.budget)
    got = {t: ticks[t].desired for t in case.desired}
    assert got == case.desired, [(t.now, t.load, t.ready, t.desired, t.decision.reason) for t in ticks]
    for t, text in case.reasons.items():
        assert text in ticks[t].decision.reason, (t, ticks[t].decision.reason)
    assert {t: ticks[t].panicking for t in case.panic} == case.panic
    check_invariants(spec, ticks, case.budget)


def test_burst_never_scales_down_in_panic_and_halves_at_most_after() -> None:
    spec = ScaleSpec(1, 0, 10, DEFAULT)
    ticks = simulate(spec, bursts(1, (30, 2, 10)), 150)
    in_panic = [t for t in ticks if t.panicking]
    assert [t.now for t in in_panic] == [float(s) for s in range(30, 90)]
    assert {t.desired for t in in_panic} == {10}  # held at the peak though load fell back to 1 at 32
    assert all(t.decision.panic_since == 30.0 for t in in_panic)
    after = [t for t in ticks if t.now >= 90]
    assert [t.desired for t in after[:4]] == [5, 2, 1, 1]
    for t in after:
        assert t.desired >= t.ready // 2


def test_step_reaches_eight_within_two_ticks_even_with_slower_containers() -> None:
    spec = ScaleSpec(1, 0, 10, DEFAULT)
    for lag in (1, 2, 3):
        ticks = simulate(spec, step(1, 8, at=20), 60, lag=lag)
        assert ticks[20].desired == 8 or ticks[21].desired == 8, lag
        assert max(t.desired for t in ticks) == 8
        assert all(t.desired == 8 for t in ticks[21:]), lag


def test_panic_concurrency_counts_the_latest_report_in_full() -> None:
    spec = ScaleSpec(1, 0, 10, DEFAULT)
    ticks = simulate(spec, step(1, 8, at=20), 22)
    # panic window [14, 20]: six 1s and one 8 average 2.0, but the latest 8 counts in full
    assert ticks[20].decision.panic_concurrency == 8.0
    assert ticks[20].decision.stable_concurrency == pytest.approx((20 * 1 + 8) / 21)


def test_a_silent_gateway_does_not_keep_a_function_in_panic() -> None:
    spec = ScaleSpec(1, 0, 10, DEFAULT)
    # 8 in flight, then the gateway goes silent at t=20 (crashed, partitioned): no more reports.
    ticks = simulate(spec, constant(8), 300, reports=lambda now: now < 20)
    late = [t for t in ticks if t.now >= 90]
    assert not any(t.panicking for t in late), [(t.now, t.desired, t.decision.reason) for t in late[:5]]
    assert all(t.decision.panic_concurrency == 0.0 for t in late)
    assert ticks[-1].desired < 8


# -- single decisions: which rule set the number -------------------------------


def obs(samples: list[tuple[float, float]], ready: int, *, budget: int = 100, last_active: float = 0.0,
        panic_since: float | None = None, previous_desired: int = 0) -> Observed:
    return Observed(samples, ready, budget, last_active, panic_since, previous_desired)


def flat(value: float, start: int, end: int) -> list[tuple[float, float]]:
    return [(float(t), value) for t in range(start, end + 1)]


@pytest.mark.parametrize(("spec", "observed", "now", "desired", "reason"), [
    pytest.param(ScaleSpec(1, 0, 10, DEFAULT), obs([(0.0, 8.0)], 1), 0.0, 8,
                 "panic: 8.0 in flight over 6 s", id="panic"),
    pytest.param(ScaleSpec(1, 0, 10, DEFAULT), obs(flat(3, 0, 60), 3, last_active=60), 60.0, 3,
                 "stable: 3.0 in flight over 60 s", id="stable"),
    pytest.param(ScaleSpec(1, 0, 10, DEFAULT), obs(flat(0, 0, 60), 1, last_active=50), 60.0, 1,
                 "idle 10 s, zero after 30 s", id="idle-within-grace"),
    pytest.param(ScaleSpec(1, 0, 10, DEFAULT), obs(flat(0, 0, 60), 1, last_active=30), 60.0, 0,
                 "idle 30 s: scaled to zero", id="idle-grace-over"),
    pytest.param(ScaleSpec(1, 2, 10, DEFAULT), obs([], 0), 5.0, 2, "min_scale 2", id="min_scale"),
    pytest.param(ScaleSpec(1, 0, 5, DEFAULT), obs([(0.0, 8.0)], 1), 0.0, 5,
                 "panic: 8.0 in flight over 6 s; capped by max_scale 5", id="max_scale"),
    pytest.param(ScaleSpec(1, 0, 10, DEFAULT), obs([(0.0, 8.0)], 1, budget=3), 0.0, 3,
                 "panic: 8.0 in flight over 6 s; capped by the host's container budget", id="budget"),
    pytest.param(ScaleSpec(1, 0, 10, DEFAULT), obs([(0.0, 8.0)], 1, budget=-2), 0.0, 0,
                 "capped by the host's container budget", id="budget-negative-means-zero"),
    pytest.param(ScaleSpec(1, 0, 100, DEFAULT), obs([(0.0, 50.0)], 2), 0.0, 20,
                 "panic: 50.0 in flight over 6 s; scale-up limited to 20", id="scale-up-limit"),
    pytest.param(ScaleSpec(1, 0, 100, DEFAULT), obs([(0.0, 50.0)], 0), 0.0, 10,
                 "scale-up limited to 10", id="scale-up-from-zero-at-the-rate"),
    pytest.param(ScaleSpec(1, 0, 100, DEFAULT), obs(flat(0, 0, 60), 16, last_active=50), 60.0, 8,
                 "stable: 0.0 in flight over 60 s; scale-down limited to 8", id="scale-down-limit-16"),
    pytest.param(ScaleSpec(1, 0, 100, DEFAULT), obs(flat(0, 0, 60), 5, last_active=50), 60.0, 2,
                 "scale-down limited to 2", id="scale-down-limit-odd-floors"),
    pytest.param(ScaleSpec(1, 0, 100, replace(DEFAULT, max_scale_down_rate=4.0)),
                 obs(flat(0, 0, 60), 16, last_active=50), 60.0, 4, "scale-down limited to 4",
                 id="scale-down-rate-4"),
    pytest.param(ScaleSpec(4, 0, 10, DEFAULT), obs(flat(10, 0, 60), 3, last_active=60), 60.0, 3,
                 "stable: 10.0 in flight over 60 s", id="concurrency-4"),
])
def test_single_decision(spec: ScaleSpec, observed: Observed, now: float, desired: int, reason: str) -> None:
    decision = decide(spec, observed, now)
    assert decision.desired == desired, decision
    assert reason in decision.reason, decision.reason


@pytest.mark.parametrize(("load", "ready", "panics"), [
    (7.0, 4, False),  # 7 < 2 x 4
    (8.0, 4, True),  # 8 == 2 x 4: reaching the threshold is enough
    (1.0, 0, False),  # from zero, one request is not a burst (ready counts as 1)
    (2.0, 0, True),
    (3.0, 1, True),
])
def test_panic_threshold(load: float, ready: int, panics: bool) -> None:
    samples = [*flat(load, 0, 59), (60.0, load)]
    d = decide(ScaleSpec(1, 0, 100, DEFAULT), obs(samples, ready, last_active=60), 60.0)
    assert d.panic_since == (60.0 if panics else None)


def test_panic_lasts_exactly_one_stable_window_past_the_last_arming() -> None:
    spec = ScaleSpec(1, 0, 10, DEFAULT)
    quiet = flat(1, 0, 200)
    held = decide(spec, obs(quiet, 8, panic_since=100.0, previous_desired=8), 159.9)
    assert held.panic_since == 100.0
    assert held.desired == 8  # never scales down in panic, though 1 in flight needs 1
    assert held.reason.startswith("panic")
    over = decide(spec, obs(quiet, 8, panic_since=100.0, previous_desired=8), 160.0)
    assert over.panic_since is None
    assert over.desired == 4
    assert over.reason == "stable: 1.0 in flight over 60 s; scale-down limited to 4"


def test_panic_keeps_the_previous_desired_count_while_containers_start() -> None:
    # 10 desired last tick, 2 ready so far, load down to 3: panic holds 10 (the rate limit allows 20).
    observed = obs(flat(3, 0, 60), 2, panic_since=55.0, previous_desired=10)
    d = decide(ScaleSpec(1, 0, 10, DEFAULT), observed, 60.0)
    assert d.desired == 10
    assert d.panic_since == 55.0


def test_windows_ignore_samples_outside_them() -> None:
    spec = ScaleSpec(1, 0, 10, DEFAULT)
    samples = [(-5.0, 9.0), (50.0, 2.0), (53.0, 4.0), (100.0, 7.0)]  # one too old, one in the future
    d = decide(spec, obs(samples, 4, last_active=53), 60.0)
    assert d.stable_concurrency == 3.0  # (2 + 4) / 2
    assert d.panic_concurrency == 0.0  # nothing in [54, 60]; the latest sample is in the future
    assert d.desired == 3


def test_decide_without_samples_or_containers_wants_none() -> None:
    d = decide(ScaleSpec(1, 0, 10, DEFAULT), obs([], 0), 1000.0)
    assert (d.desired, d.panic_since, d.stable_concurrency, d.panic_concurrency) == (0, None, 0.0, 0.0)


# -- prewarm_target --------------------------------------------------------------


@pytest.mark.parametrize(("base", "most", "cold_starts", "now", "per_extra", "expected"), [
    pytest.param(1, 4, [], 100.0, 2, 1, id="none-base"),
    pytest.param(1, 4, [99.0], 100.0, 2, 1, id="one-below-per-extra"),
    pytest.param(1, 4, [98.0, 99.0], 100.0, 2, 2, id="two-one-extra"),
    pytest.param(1, 4, [97.0, 98.0, 99.0], 100.0, 2, 2, id="three-still-one-extra"),
    pytest.param(1, 4, [96.0, 97.0, 98.0, 99.0], 100.0, 2, 3, id="four-two-extra"),
    pytest.param(1, 4, [float(t) for t in range(90, 100)], 100.0, 2, 4, id="ten-capped-at-most"),
    pytest.param(1, 4, [98.0, 99.0], 100.0, 1, 3, id="per-extra-1"),
    pytest.param(1, 4, [96.0, 97.0, 98.0, 99.0], 100.0, 3, 2, id="per-extra-3"),
    pytest.param(1, 4, [40.0, 41.0], 100.0, 2, 2, id="exactly-window-old-still-counts"),
    pytest.param(1, 4, [39.0, 39.5], 100.0, 2, 1, id="aged-out"),
    pytest.param(1, 4, [101.0, 102.0], 100.0, 2, 1, id="future-ignored"),
    pytest.param(2, 1, [float(t) for t in range(90, 100)], 100.0, 2, 2, id="most-below-base-keeps-base"),
    pytest.param(0, 3, [98.0, 99.0], 100.0, 0, 2, id="per-extra-0-treated-as-1"),
])
def test_prewarm_target(base: int, most: int, cold_starts: list[float], now: float, per_extra: int,
                        expected: int) -> None:
    assert prewarm_target(base, most, cold_starts, now, per_extra=per_extra) == expected


def test_prewarm_target_over_time_grows_then_returns_to_base() -> None:
    cold_starts = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
    seen = {now: prewarm_target(1, 3, [c for c in cold_starts if c <= now], float(now))
            for now in (9, 10, 11, 13, 15, 17, 70, 71, 73, 75, 76, 77, 78)}
    assert seen == {9: 1, 10: 1, 11: 2, 13: 3, 15: 3, 17: 3, 70: 3, 71: 3, 73: 3, 75: 2, 76: 2, 77: 1, 78: 1}


def test_prewarm_target_window_is_a_parameter() -> None:
    assert prewarm_target(1, 5, [70.0, 80.0], 100.0, window_s=10.0) == 1
    assert prewarm_target(1, 5, [70.0, 80.0], 100.0, window_s=30.0) == 2


# -- policy_errors --------------------------------------------------------------


def test_default_policy_is_valid() -> None:
    assert policy_errors(DEFAULT) == []


def test_limits_cover_every_knob() -> None:
    assert set(POLICY_LIMITS) == set(vars(DEFAULT))


@pytest.mark.parametrize("knob", sorted(POLICY_LIMITS))
def test_policy_limits_are_inclusive(knob: str) -> None:
    lo, hi = POLICY_LIMITS[knob]
    windows = {"stable_window_s": 3600.0, "panic_window_s": 0.1}  # keep panic <= stable at either end
    for value in (lo, hi):
        policy = replace(DEFAULT, **{**windows, knob: value})
        assert policy_errors(policy) == [], (knob, value)


@pytest.mark.parametrize(("knob", "value", "message"), [
    ("target_utilization", 0.0, "target_utilization must be between 0.01 and 1, got 0"),
    ("target_utilization", 1.5, "target_utilization must be between 0.01 and 1, got 1.5"),
    ("stable_window_s", 0.5, "stable_window_s must be between 1 and 3600, got 0.5"),
    ("stable_window_s", 7200.0, "stable_window_s must be between 1 and 3600, got 7200"),
    ("panic_window_s", 0.0, "panic_window_s must be between 0.1 and 3600, got 0"),
    ("panic_threshold", 0.5, "panic_threshold must be between 1 and 100, got 0.5"),
    ("panic_threshold", 101.0, "panic_threshold must be between 1 and 100, got 101"),
    ("max_scale_up_rate", 0.9, "max_scale_up_rate must be between 1 and 1000, got 0.9"),
    ("max_scale_up_rate", 1001.0, "max_scale_up_rate must be between 1 and 1000, got 1001"),
    ("max_scale_down_rate", 0.0, "max_scale_down_rate must be between 1 and 1000, got 0"),
    ("max_scale_down_rate", 2000.0, "max_scale_down_rate must be between 1 and 1000, got 2000"),
    ("scale_to_zero_grace_s", -1.0, "scale_to_zero_grace_s must be between 0 and 86400, got -1"),
    ("scale_to_zero_grace_s", 86401.0, "scale_to_zero_grace_s must be between 0 and 86400, got 86401"),
    ("target_utilization", math.nan, "target_utilization must be between 0.01 and 1, got nan"),
    ("max_scale_up_rate", math.inf, "max_scale_up_rate must be between 1 and 1000, got inf"),
])
def test_policy_errors_name_the_knob(knob: str, value: float, message: str) -> None:
    policy = replace(DEFAULT, **{"stable_window_s": 60.0, "panic_window_s": 0.1, knob: value})
    assert policy_errors(policy) == [message]


def test_panic_window_longer_than_stable_window() -> None:
    errors = policy_errors(replace(DEFAULT, stable_window_s=10.0, panic_window_s=11.0))
    assert errors == ["panic_window_s must not exceed stable_window_s"]
    assert policy_errors(replace(DEFAULT, stable_window_s=10.0, panic_window_s=10.0)) == []


def test_policy_errors_lists_every_problem() -> None:
    bad = ScalePolicy(target_utilization=2.0, stable_window_s=0.0, panic_window_s=5000.0, panic_threshold=0.0,
                      max_scale_up_rate=0.0, max_scale_down_rate=0.0, scale_to_zero_grace_s=-5.0)
    errors = policy_errors(bad)
    assert len(errors) == 8
    for knob in POLICY_LIMITS:
        assert sum(e.startswith(knob + " must be between") for e in errors) == 1, knob
    assert errors[-1] == "panic_window_s must not exceed stable_window_s"
