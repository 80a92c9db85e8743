"""The pool's memory for autoscaling: load samples, panic state, load-failure backoff."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pool_manager.autoscaler import Decision, Observed, ScalePolicy, ScaleSpec, decide, prewarm_target
from pool_manager.registry import FunctionSpec

MAX_LOAD_BACKOFF_S = 60.0
MAX_SAMPLES = 20_000


@dataclass
class FunctionState:
    """Everything decide() needs to remember about one function between ticks."""

    last_active: float
    # Pruned to the function's own stable window in decide(); the cap only
    # bounds memory if decide() is not called (a report per second for hours).
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    panic_since: float | None = None
    decision: Decision | None = None
    load_failures: int = 0
    retry_load_at: float = 0.0


class Scaler:
    """Turns gateway load reports into desired counts, one decide() per function per tick."""

    def __init__(self, policy: ScalePolicy, prewarm: int, prewarm_max: int,
                 prewarm_window_s: float = 60.0) -> None:
        self.policy = policy
        self.prewarm = prewarm
        self.prewarm_max = prewarm_max
        self.prewarm_window_s = prewarm_window_s
        self.functions: dict[str, FunctionState] = {}
        self.cold_starts: deque[float] = deque(maxlen=1000)

    def state(self, name: str, now: float) -> FunctionState:
        st = self.functions.get(name)
        if st is None:
            # A function first seen now (deployed, or adopted after a restart)
            # gets a full grace period before it may go to zero.
            st = self.functions[name] = FunctionState(last_active=now)
        return st

    def forget(self, name: str) -> None:
        self.functions.pop(name, None)

    def record(self, names: Iterable[str], load: dict[str, float], now: float) -> None:
        """One gateway report: functions it does not name had no load."""
        for name in names:
            st = self.state(name, now)
            value = max(0.0, float(load.get(name, 0.0)))
            st.samples.append((now, value))
            if value > 0:
                st.last_active = now

    def policy_for(self, spec: FunctionSpec) -> ScalePolicy:
        return replace(self.policy, **spec.autoscale) if spec.autoscale else self.policy

    def decide(self, spec: FunctionSpec, ready: int, budget: int, now: float) -> Decision:
        st = self.state(spec.name, now)
        policy = self.policy_for(spec)
        while st.samples and st.samples[0][0] < now - policy.stable_window_s:
            st.samples.popleft()
        observed = Observed(
            samples=st.samples, ready=ready, budget=budget, last_active=st.last_active,
            panic_since=st.panic_since,
            previous_desired=st.decision.desired if st.decision else 0,
        )
        scale = ScaleSpec(spec.concurrency, spec.min_scale, spec.max_scale, policy)
        decision = decide(scale, observed, now)
        st.panic_since, st.decision = decision.panic_since, decision
        return decision

    def may_load(self, name: str, now: float) -> bool:
        st = self.functions.get(name)
        return st is None or st.load_failures == 0 or now >= st.retry_load_at

    def load_failed(self, name: str, now: float) -> None:
        st = self.state(name, now)
        st.load_failures += 1
        # Exponential backoff: code that fails to load must not eat the budget.
        st.retry_load_at = now + min(MAX_LOAD_BACKOFF_S, 2.0 ** (st.load_failures - 1))

    def reset_backoff(self, name: str) -> None:
        st = self.functions.get(name)
        if st is not None:
            st.load_failures = 0

    def load_succeeded(self, name: str, now: float, cold: bool) -> None:
        self.state(name, now).load_failures = 0
        if cold:
            self.cold_starts.append(now)

    def waiting(self, name: str, capacity: int) -> bool:
        """Did the latest report show more load than ready slots: is a caller waiting?"""
        st = self.functions.get(name)
        return bool(st and st.samples and st.samples[-1][1] > capacity)

    def prewarm_wanted(self, now: float) -> int:
        return prewarm_target(self.prewarm, self.prewarm_max, self.cold_starts, now, self.prewarm_window_s)

    def describe(self, name: str) -> dict[str, Any]:
        st = self.functions.get(name)
        if st is None or st.decision is None:
            return {"desired": None, "reason": "no decision yet", "panic": False}
        return {
            "desired": st.decision.desired,
            "reason": st.decision.reason,
            "panic": st.decision.panic_since is not None,
            "load_failures": st.load_failures,
        }
