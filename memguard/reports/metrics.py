"""Prometheus metrics: a sink that counts reports, and a collector that reads
the agent's state at scrape time (nothing is computed between scrapes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from memguard.reports.report import Report

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class MetricsSink:
    """Counts every report by reason and observes kill latency."""

    name = "metrics"

    def __init__(self, registry: CollectorRegistry) -> None:
        self._reports = Counter(
            "memguard_reports", "Reports by reason (Event reason).", ["reason"], registry=registry
        )
        self._latency = Histogram(
            "memguard_kill_latency_seconds",
            "Kernel notification to SIGKILL issued.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )

    async def deliver(self, report: Report) -> None:
        self._reports.labels(report.kind.value).inc()
        if report.latency_s is not None:
            self._latency.observe(report.latency_s)


class StateCollector(Collector):
    """Metric families built from live objects when Prometheus scrapes."""

    def __init__(self, build: Callable[[], Iterable[Metric]]) -> None:
        self._build = build

    def collect(self) -> Iterator[Metric]:
        yield from self._build()


def gauge(name: str, help_text: str, value: float) -> Metric:
    return GaugeMetricFamily(name, help_text, value=value)


def counter(name: str, help_text: str, values: Mapping[str, float], label: str) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, number in sorted(values.items()):
        family.add_metric([key], number)
    return family


def plain_counter(name: str, help_text: str, value: float) -> Metric:
    return CounterMetricFamily(name, help_text, value=value)


def labelled_gauge(name: str, help_text: str, values: Mapping[str, float], label: str) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=[label])
    for key, number in sorted(values.items()):
        family.add_metric([key], number)
    return family


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
