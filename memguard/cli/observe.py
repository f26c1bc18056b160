"""What a running agent shows: the /metrics families read at scrape time and the
/healthz /readyz /metrics routes. Part of the composition root: it knows the
agent, the HTTP counters, the log handler and the Kubernetes features."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from memguard.cli.logsetup import NonBlockingHandler
from memguard.guarding.agent import Agent
from memguard.reports.http import Handler, HttpCounters

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from memguard.kube.features import KubeFeatures


def state_metrics(
    agent: Agent,
    kube: KubeFeatures | None,
    log_handler: NonBlockingHandler | None = None,
    http: HttpCounters | None = None,
) -> Iterable[Metric]:
    from memguard.reports.metrics import counter, gauge, labelled_gauge, plain_counter

    status = agent.current_status()
    yield gauge("memguard_guarded_cgroups", "Container cgroups being guarded.", status.guarded)
    yield gauge(
        "memguard_containers_waiting_for_fds",
        "Containers found but not guarded: RLIMIT_NOFILE leaves no fds for their guards.",
        status.waiting_for_fds,
    )
    yield gauge("memguard_ready", "1 once every discovered cgroup is armed.", agent.ready())
    yield plain_counter(
        "memguard_guard_failures", "Guards that failed and were restarted.", status.guard_failures
    )
    yield counter(
        "memguard_component_failures",
        "Failures of a component (restarted with backoff; guard: one guard's failure).",
        status.component_failures,
        "component",
    )
    yield labelled_gauge(
        "memguard_component_down",
        "1 while a failed component waits to be restarted.",
        {name: float(name in status.components_down) for name in status.component_failures},
        "component",
    )
    yield labelled_gauge(
        "memguard_discovery_degraded_directories",
        "Directories discovery cannot watch or list now (found by faster rescans).",
        status.discovery_degraded,
        "cause",
    )
    yield counter(
        "memguard_discovery_errors",
        "Failures to watch or list a directory, by cause.",
        status.discovery_errors,
        "cause",
    )
    yield counter(
        "memguard_report_drops",
        "Reports dropped: the sink's queue was full.",
        dict(agent.bus.dropped),
        "sink",
    )
    yield counter(
        "memguard_report_sink_errors",
        "Reports a sink failed to deliver.",
        dict(agent.bus.failed),
        "sink",
    )
    if log_handler is not None:
        yield plain_counter(
            "memguard_log_drops",
            "Log lines dropped: the log output was blocked (or failed).",
            log_handler.dropped,
        )
    if http is not None:
        yield counter(
            "memguard_http_connections",
            "Connections to the health/metrics endpoint, by how they ended.",
            dict(http.outcomes),
            "outcome",
        )
    if kube is not None:
        yield counter(
            "memguard_kube_events",
            "Kubernetes Event posts by outcome.",
            dict(kube.poster.counts),
            "outcome",
        )
        yield gauge("memguard_pod_cache_pods", "Pods on this node in the cache.", len(kube.cache))
        yield plain_counter(
            "memguard_pod_cache_relists", "Full pod lists (start, 410 Gone).", kube.cache.relists
        )
        yield counter(
            "memguard_pod_cache_problems",
            "Pod cache trouble by kind: errors (backed off), expired (410 Gone), ignored "
            "(unusable objects), over_cap (pods beyond the cache's bound).",
            {
                "errors": kube.cache.errors,
                "expired": kube.cache.expired,
                "ignored": kube.cache.ignored,
                "over_cap": kube.cache.over_cap,
            },
            "kind",
        )
        yield gauge(
            "memguard_pod_cache_retrying_seconds",
            "Backoff the pod cache is waiting out now (0: following).",
            kube.cache.retrying_in_s,
        )
        yield plain_counter(
            "memguard_kube_event_stalls",
            "Event deliveries abandoned: the Kubernetes thread did not answer in time.",
            kube.sink.stalls,
        )


def routes(
    agent: Agent, registry: CollectorRegistry, status: Handler | None = None
) -> dict[str, Any]:
    """status: the /status page (memguard.cli.statuspage), served beside the others."""
    from memguard.reports.metrics import render

    def ready() -> tuple[int, str, bytes]:
        reasons = agent.current_status().not_ready_reasons()
        if not reasons:
            return 200, "text/plain", b"ready\n"
        return 503, "text/plain", ("not ready: " + "; ".join(reasons) + "\n").encode()

    table = {
        "/healthz": lambda: (200, "text/plain", b"ok\n"),
        "/readyz": ready,
        "/metrics": lambda: (200, "text/plain; version=0.0.4", render(registry)),
    }
    if status is not None:
        table["/status"] = status
    return table
