"""The gateway's Prometheus metrics: counters on the hot path, gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.app import Gateway

REGISTRY = CollectorRegistry(auto_describe=True)
# Buckets from sub-millisecond warm calls to cold starts and long handlers.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter(
    "hearth_requests_total", "Invocations answered, by function and HTTP status",
    ["function", "status"], registry=REGISTRY,
)
LATENCY = Histogram(
    "hearth_request_duration_seconds", "Invocation latency through the gateway",
    ["function"], buckets=LATENCY_BUCKETS_S, registry=REGISTRY,
)
STARTS = Counter(
    "hearth_starts_total", "Invocations by start type: cold (new container), prewarmed, warm",
    ["function", "start"], registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "hearth_queue_wait_seconds", "Time a request waited for a free container",
    ["function"], buckets=LATENCY_BUCKETS_S, registry=REGISTRY,
)
RETRIES = Counter(
    "hearth_retries_total", "Requests retried on another container (never reached a handler)",
    ["function"], registry=REGISTRY,
)
BREAKER_CHANGES = Counter(
    "hearth_breaker_transitions_total", "Circuit breaker state changes", ["state"], registry=REGISTRY,
)
EXECUTIONS = Counter(
    "hearth_executions_total", "POST /execute runs by outcome status", ["status"], registry=REGISTRY,
)


class Children:
    """A metric's children by label values, kept: ``labels()`` checks and locks on every call.

    Only for label values from a bounded set (known function names, status
    codes): the metric keeps every child it ever made anyway.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


# The per-request metrics, by function (and status or start type).
requests_by = Children(REQUESTS)
latency_by = Children(LATENCY)
starts_by = Children(STARTS)
queue_wait_by = Children(QUEUE_WAIT)
retries_by = Children(RETRIES)


class GatewayCollector(Collector):
    """Queue depth, in-flight requests and open breakers, read from the gateway when scraped."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gw = self.gateway
        queued = GaugeMetricFamily("hearth_queue_depth", "Requests waiting per function", labels=["function"])
        for name, queue in sorted(gw.routes.queues.items()):
            queued.add_metric([name], len(queue))
        yield queued
        inflight = GaugeMetricFamily(
            "hearth_inflight_requests", "Requests in flight or queued per function", labels=["function"]
        )
        for name, n in sorted(gw.dispatcher.inflight.items()):
            inflight.add_metric([name], n)
        yield inflight
        breakers = GaugeMetricFamily(
            "hearth_breakers", "Containers by circuit breaker state", labels=["function", "state"]
        )
        for name, route in sorted(gw.routes.functions.items()):
            states: dict[str, int] = {}
            for c in route.containers:
                states[c.breaker.state.value] = states.get(c.breaker.state.value, 0) + 1
            for state, n in sorted(states.items()):
                breakers.add_metric([name, state], n)
        yield breakers


_collector: GatewayCollector | None = None


def register_gateway(gateway: Gateway) -> None:
    """Point the scrape-time collector at ``gateway`` (registered once per process)."""
    global _collector
    if _collector is None:
        _collector = GatewayCollector(gateway)
        REGISTRY.register(_collector)
    _collector.gateway = gateway


def exposition() -> bytes:
    return generate_latest(REGISTRY)
