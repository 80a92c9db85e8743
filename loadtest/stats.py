"""Small statistics shared by the benchmarks."""

from __future__ import annotations


def percentile(samples_ms: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; ``samples_ms`` must not be empty."""
    ordered = sorted(samples_ms)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
