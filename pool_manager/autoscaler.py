"""How many containers a function should have: Knative's KPA, as a pure function.

The gateway reports each function's concurrency (requests in flight plus
requests queued) every second, and at once when a queue forms. ``decide``
turns the recent reports into a desired container count:

- Two averages of the observed concurrency: over the *stable* window
  (default 60 s) and over the *panic* window (default 6 s). Each, divided by
  the target concurrency per container (the function's ``concurrency`` times
  the target utilisation) and rounded up, is a container count.
- Normally the stable count wins, so short dips do not cause churn. When the
  panic count reaches ``panic_threshold`` (default 2) times the containers
  ready now, the function enters *panic mode*: the panic count wins, and it
  never scales down, until a whole stable window passes without the
  threshold being crossed again. The latest report counts in full in the
  panic estimate, so a burst is met in the tick it is reported rather than
  after the window fills: a queue forming specializes containers at once.
- Each step may grow the count at most ``max_scale_up_rate`` times the ready
  count (and at least to that rate from zero), and shrink it at most to
  ``1 / max_scale_down_rate`` of the ready count, so one bad sample cannot
  tear a function down.
- A function with no load for ``scale_to_zero_grace_s`` (default 30 s)
  goes to zero containers, even while the stable average still remembers
  older load; before that it keeps at least one. Nothing in flight over the
  panic window is required too, so a grace shorter than the gap between
  two load reports cannot remove a busy function's containers.
- The result is bounded by ``min_scale``, ``max_scale`` and the containers
  the host-wide budget leaves for this function; the decision says which
  rule set the number, for people reading ``hearth ls``.

``prewarm_target`` sizes the generic pool the same way OpenWhisk's reactive
prewarm does: more cold starts in the last minute, more warm spares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalePolicy:
    """Autoscaling knobs; global defaults, overridable per function."""

    target_utilization: float = 1.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 10.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_s: float = 30.0


# (lowest, highest) accepted for each knob; a window of 0 would divide by nothing.
POLICY_LIMITS: dict[str, tuple[float, float]] = {
    "target_utilization": (0.01, 1.0),
    "stable_window_s": (1.0, 3600.0),
    "panic_window_s": (0.1, 3600.0),
    "panic_threshold": (1.0, 100.0),
    "max_scale_up_rate": (1.0, 1000.0),
    "max_scale_down_rate": (1.0, 1000.0),
    "scale_to_zero_grace_s": (0.0, 86400.0),
}


def policy_errors(policy: ScalePolicy) -> list[str]:
    """What is wrong with a policy, named by knob; empty when it is fine."""
    errors = []
    for name, (lo, hi) in POLICY_LIMITS.items():
        value = getattr(policy, name)
        if not lo <= value <= hi:
            errors.append(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    if policy.panic_window_s > policy.stable_window_s:
        errors.append("panic_window_s must not exceed stable_window_s")
    return errors


@dataclass(frozen=True)
class ScaleSpec:
    """What decide needs to know about a function."""

    concurrency: int
    min_scale: int
    max_scale: int
    policy: ScalePolicy


@dataclass(frozen=True)
class Observed:
    """What the pool saw: load samples ``(time, concurrency)``, containers, memory of past decisions."""

    samples: Sequence[tuple[float, float]]
    ready: int
    budget: int  # containers this function may have at most, given everyone else's
    last_active: float  # when load was last above zero
    panic_since: float | None = None
    previous_desired: int = 0


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    panic_since: float | None
    stable_concurrency: float
    panic_concurrency: float


def window_average(samples: Sequence[tuple[float, float]], now: float, window_s: float) -> float:
    recent = [value for at, value in samples if now - window_s <= at <= now]
    return sum(recent) / len(recent) if recent else 0.0


def decide(spec: ScaleSpec, observed: Observed, now: float) -> Decision:
    policy = spec.policy
    target = max(spec.concurrency * policy.target_utilization, 1e-9)
    stable = window_average(observed.samples, now, policy.stable_window_s)
    latest = 0.0
    if observed.samples and now - policy.panic_window_s <= observed.samples[-1][0] <= now:
        latest = observed.samples[-1][1]  # a stale report must not keep a function in panic
    panic = max(window_average(observed.samples, now, policy.panic_window_s), latest)
    want_stable, want_panic = _containers(stable, target), _containers(panic, target)
    ready = observed.ready

    panic_since = observed.panic_since
    if want_panic >= policy.panic_threshold * max(ready, 1) and want_panic > ready:
        panic_since = now  # (re)arm: panic lasts a stable window past the last burst
    elif panic_since is not None and now - panic_since >= policy.stable_window_s:
        panic_since = None

    if panic_since is not None:
        desired = max(want_panic, observed.previous_desired, ready)
        reason = f"panic: {panic:.1f} in flight over {policy.panic_window_s:g} s"
    else:
        desired = want_stable
        reason = f"stable: {stable:.1f} in flight over {policy.stable_window_s:g} s"

    desired, reason = _rate_limit(desired, reason, ready, policy)
    desired, reason = _idle(desired, reason, observed, now, policy, panic)
    desired, reason = _bounds(desired, reason, spec, observed.budget)
    return Decision(desired, reason, panic_since, stable, panic)


def _containers(concurrency: float, target: float) -> int:
    # Rounded first: 9 / 1.8 is 5.000000000000001 in floats, and must be 5.
    return math.ceil(round(concurrency / target, 9))


def _rate_limit(desired: int, reason: str, ready: int, policy: ScalePolicy) -> tuple[int, str]:
    most = math.ceil(max(ready, 1) * policy.max_scale_up_rate)
    if desired > most:
        return most, f"{reason}; scale-up limited to {most}"
    least = math.floor(ready / policy.max_scale_down_rate)
    if desired < least:
        return least, f"{reason}; scale-down limited to {least}"
    return desired, reason


def _idle(desired: int, reason: str, observed: Observed, now: float, policy: ScalePolicy,
          recent: float) -> tuple[int, str]:
    idle_s = now - observed.last_active
    if recent == 0 and idle_s >= policy.scale_to_zero_grace_s:
        return 0, f"idle {idle_s:.0f} s: scaled to zero"
    if desired > 0:
        return desired, reason
    if observed.ready > 0:
        return 1, f"idle {idle_s:.0f} s, zero after {policy.scale_to_zero_grace_s:g} s"
    return 0, f"idle {idle_s:.0f} s: scaled to zero"


def _bounds(desired: int, reason: str, spec: ScaleSpec, budget: int) -> tuple[int, str]:
    if desired < spec.min_scale:
        desired, reason = spec.min_scale, f"min_scale {spec.min_scale}"
    if desired > spec.max_scale:
        desired, reason = spec.max_scale, f"{reason}; capped by max_scale {spec.max_scale}"
    if desired > budget:
        desired, reason = max(0, budget), f"{reason}; capped by the host's container budget"
    return desired, reason


def prewarm_target(
    base: int, most: int, cold_starts: Sequence[float], now: float,
    window_s: float = 60.0, per_extra: int = 2,
) -> int:
    """Generic containers to keep warm: one more for every ``per_extra`` recent cold starts."""
    recent = sum(1 for at in cold_starts if now - window_s <= at <= now)
    return max(0, min(max(base, most), base + recent // max(per_extra, 1)))
