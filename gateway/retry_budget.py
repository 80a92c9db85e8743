"""A retry budget: retries stay a bounded fraction of traffic, so they cannot snowball."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RetryBudget:
    """Tokens earned per request (``ratio``) and per second (``min_per_s``); a retry spends one."""

    ratio: float
    min_per_s: float
    cap: float = 20.0
    tokens: float = 10.0
    last: float = 0.0

    def on_request(self, now: float) -> None:
        self._refill(now)
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def try_spend(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.cap, self.tokens + (now - self.last) * self.min_per_s)
        self.last = now
