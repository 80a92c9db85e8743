"""Least-connections choice among a function's containers: a pure function."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """A container as the balancer sees it at one instant."""

    key: str
    inflight: int
    concurrency: int
    allowed: bool = True  # False while its circuit breaker is open


def pick(candidates: Sequence[Candidate], offset: int = 0) -> Candidate | None:
    """The allowed candidate with the fewest requests in flight and a free slot.

    Ties go to the first at or after ``offset`` (in the given order), so a
    caller that rotates ``offset`` spreads equal load round-robin rather than
    piling onto the first container.
    """
    best: Candidate | None = None
    n = len(candidates)
    for i in range(n):
        c = candidates[(offset + i) % n]
        if not c.allowed or c.inflight >= c.concurrency:
            continue
        if best is None or c.inflight < best.inflight:
            best = c
            if c.inflight == 0:
                break  # cannot do better than idle
    return best
