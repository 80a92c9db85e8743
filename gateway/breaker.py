"""A circuit breaker per container: a state machine driven by the caller's clock.

Only infrastructure failures count (the container could not be reached or
broke the connection), never the function's own errors or timeouts: a
function that raises is not a sick container.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class Breaker:
    """Closed until ``threshold`` consecutive failures; open for ``open_s``; then one probe."""

    threshold: int = 3
    open_s: float = 5.0
    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def allows(self, now: float) -> bool:
        """May a request go to this container now? Does not change state."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            return now - self.opened_at >= self.open_s
        return not self.probing

    def on_dispatch(self, now: float) -> State | None:
        """A request was sent; past the open period it is the half-open probe.

        Returns the new state when this changed it."""
        changed = None
        if self.state is State.OPEN and now - self.opened_at >= self.open_s:
            self.state = changed = State.HALF_OPEN
        if self.state is State.HALF_OPEN:
            self.probing = True
        return changed

    def on_success(self, now: float) -> State | None:
        """Returns the new state when this changed it."""
        self.failures = 0
        self.probing = False
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            return State.CLOSED
        return None

    def trip(self, now: float) -> State | None:
        """Open at once: the container is stuck (its runtime missed its own deadline)."""
        self.probing = False
        self.failures = max(self.failures, self.threshold)
        changed = self.state is not State.OPEN
        self.state, self.opened_at = State.OPEN, now
        return State.OPEN if changed else None

    def on_failure(self, now: float) -> State | None:
        self.probing = False
        self.failures += 1
        if self.state is State.HALF_OPEN or (
            self.state is State.CLOSED and self.failures >= self.threshold
        ):
            self.state = State.OPEN
            self.opened_at = now
            return State.OPEN
        return None
