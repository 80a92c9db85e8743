"""The pool manager's Prometheus metrics: one registry, read at scrape time where possible."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pool_manager.pool import Pool

REGISTRY = CollectorRegistry(auto_describe=True)

SCALING_DECISIONS = Counter(
    "hearth_scaling_decisions_total",
    "Autoscaler decisions that changed a function's container count",
    ["function", "direction"],
    registry=REGISTRY,
)
SPECIALIZATIONS = Counter(
    "hearth_specializations_total",
    "Containers specialized to a function, by how they started",
    ["function", "start"],
    registry=REGISTRY,
)
LOAD_FAILURES = Counter(
    "hearth_load_failures_total", "Function code that failed to load", ["function"], registry=REGISTRY
)
REPLACEMENTS = Counter(
    "hearth_container_replacements_total",
    "Containers removed because they died, stopped or stopped answering",
    ["reason"],
    registry=REGISTRY,
)


class PoolCollector(Collector):
    """Containers by function and state, and desired counts, read from the pool when scraped."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        containers = GaugeMetricFamily(
            "hearth_containers", "Containers by function (\"\" for generic) and state",
            labels=["function", "state"],
        )
        tally = Tally((i.function or "", i.state) for i in self.pool.instances.values())
        for (function, state), n in sorted(tally.items()):
            containers.add_metric([function, state], n)
        yield containers
        desired = GaugeMetricFamily(
            "hearth_desired_containers", "The autoscaler's last desired count", labels=["function"]
        )
        for name, st in sorted(self.pool.scaler.functions.items()):
            if st.decision is not None:
                desired.add_metric([name], st.decision.desired)
        yield desired
        budget = GaugeMetricFamily("hearth_container_budget", "Host-wide container budget")
        budget.add_metric([], self.pool.config.max_containers)
        yield budget


_collector: PoolCollector | None = None


def register_pool(pool: Pool) -> None:
    """Point the scrape-time collector at ``pool`` (registered once per process)."""
    global _collector
    if _collector is None:
        _collector = PoolCollector(pool)
        REGISTRY.register(_collector)
    _collector.pool = pool


def exposition() -> bytes:
    return generate_latest(REGISTRY)
