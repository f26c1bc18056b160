"""What a running agent shows: the /metrics families read at scrape time and the
/healthz /readyz /metrics routes. Part of the composition root: it knows the
agent, the HTTP counters, the log handler and the Kubernetes features.

Every counter is exported for every label value it can take from the first
scrape on (components, sinks, causes, outcomes), at 0 until something happens."""

from __future__ import annotations

import errno
import importlib.metadata
import platform
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from memguard.cli.logsetup import NonBlockingHandler
from memguard.guarding.agent import Agent, AgentStatus
from memguard.guarding.discovery import TOO_DEEP, cause_name
from memguard.reports.http import AsyncHandler, HttpCounters

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from memguard.kube.features import KubeFeatures
    from memguard.reports.metrics import ContainerTarget, MetricsSink, Scraper

# Components every agent with an endpoint runs (others register as they start).
BASE_COMPONENTS = ("discovery", "guard", "http", "inotify")
# The causes discovery explains (others are counted under their errno name too).
_EXPLAINED = (errno.ENOSPC, errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.ELOOP)
KNOWN_CAUSES = (
    *sorted(cause_name(code) for code in (*_EXPLAINED, errno.EMFILE, errno.ENFILE, errno.ENOMEM)),
    TOO_DEEP,
)


def _components(agent: Agent, failures: dict[str, int]) -> dict[str, int]:
    known = [*BASE_COMPONENTS, *(f"sink:{name}" for name in agent.bus.sink_names)]
    return {**dict.fromkeys(known, 0), **failures}


def state_metrics(
    agent: Agent,
    kube: KubeFeatures | None,
    log_handler: NonBlockingHandler | None = None,
    http: HttpCounters | None = None,
) -> Iterable[Metric]:
    from memguard.reports.metrics import counter, plain_counter

    status = agent.current_status()
    yield from _guard_metrics(agent, status)
    yield from _component_metrics(agent, status)
    yield from _discovery_metrics(status)
    yield from _report_metrics(agent)
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
        yield from kube_metrics(kube)


def _guard_metrics(agent: Agent, status: AgentStatus) -> Iterable[Metric]:
    from memguard.reports.metrics import gauge, labelled_gauge, plain_counter

    yield gauge("memguard_guarded_cgroups", "Container cgroups being guarded.", status.guarded)
    yield gauge(
        "memguard_containers_waiting_for_fds",
        "Containers found but not guarded: RLIMIT_NOFILE leaves no fds for their guards.",
        status.waiting_for_fds,
    )
    yield gauge("memguard_ready", "1 once every discovered cgroup is armed.", agent.ready())
    yield labelled_gauge(
        "memguard_pidfd_syscall_refused",
        "1 when the kernel or a seccomp profile refuses this syscall: pidfd_open or "
        "pidfd_send_signal, kills go by kill(2) after a membership check; "
        "process_mrelease, killed processes free their memory as they exit.",
        {name: float(refused) for name, refused in agent.killer.pidfds.refusals().items()},
        "syscall",
    )
    yield plain_counter(
        "memguard_guard_failures", "Guards that failed and were restarted.", status.guard_failures
    )


def _component_metrics(agent: Agent, status: AgentStatus) -> Iterable[Metric]:
    from memguard.reports.metrics import counter, labelled_gauge

    components = _components(agent, status.component_failures)
    yield counter(
        "memguard_component_failures",
        "Failures of a component (restarted with backoff; guard: one guard's failure).",
        components,
        "component",
    )
    yield labelled_gauge(
        "memguard_component_down",
        "1 while a failed component waits to be restarted.",
        {name: float(name in status.components_down) for name in components},
        "component",
    )


def _discovery_metrics(status: AgentStatus) -> Iterable[Metric]:
    from memguard.reports.metrics import counter, labelled_gauge

    causes = dict.fromkeys(KNOWN_CAUSES, 0)
    yield labelled_gauge(
        "memguard_discovery_degraded_directories",
        "Directories discovery cannot watch or list now (found by faster rescans).",
        {**causes, **status.discovery_degraded},
        "cause",
    )
    yield counter(
        "memguard_discovery_errors",
        "Failures to watch or list a directory, by cause.",
        {**causes, **status.discovery_errors},
        "cause",
    )


def _report_metrics(agent: Agent) -> Iterable[Metric]:
    from memguard.reports.metrics import counter

    sinks = dict.fromkeys(agent.bus.sink_names, 0)
    yield counter(
        "memguard_report_drops",
        "Reports dropped: the sink's queue was full.",
        {**sinks, **agent.bus.dropped},
        "sink",
    )
    yield counter(
        "memguard_report_sink_errors",
        "Reports a sink failed to deliver.",
        {**sinks, **agent.bus.failed},
        "sink",
    )


# The pod cache's counters: (name, help, the PodCache attribute that counts).
_POD_CACHE_COUNTERS = (
    ("memguard_pod_cache_relists", "Full pod lists (start, 410 Gone).", "relists"),
    (
        "memguard_pod_cache_errors",
        "Pod list/watch rounds that failed (backed off and retried; 410 Gone not included).",
        "errors",
    ),
    (
        "memguard_pod_cache_watch_expired",
        "Pod watches that expired (410 Gone): listed again.",
        "expired",
    ),
    (
        "memguard_pod_cache_ignored_objects",
        "Objects from the API server that are not usable pods or watch events.",
        "ignored",
    ),
    (
        "memguard_pod_cache_pods_over_cap",
        "Pods not held: the cache was full (10,000 pods).",
        "over_cap",
    ),
)


def kube_metrics(kube: KubeFeatures) -> Iterable[Metric]:
    from memguard.kube.sink import OUTCOMES
    from memguard.reports.metrics import counter, gauge, plain_counter

    yield counter(
        "memguard_kube_events",
        "Kubernetes Event deliveries by outcome (created, bumped, rejected: 4xx, failed: "
        "gave up retrying, timed_out).",
        {**dict.fromkeys(OUTCOMES, 0), **kube.poster.counts},
        "outcome",
    )
    yield plain_counter(
        "memguard_kube_event_retries",
        "Event requests retried (5xx, 429, timeouts, refused connections).",
        kube.poster.retries,
    )
    yield plain_counter(
        "memguard_kube_event_stalls",
        "Event deliveries abandoned: the Kubernetes thread did not answer in time.",
        kube.sink.stalls,
    )
    cache = kube.cache
    yield gauge("memguard_pod_cache_pods", "Pods on this node in the cache.", len(cache))
    for name, help_text, attribute in _POD_CACHE_COUNTERS:
        yield plain_counter(name, help_text, getattr(cache, attribute))
    yield gauge(
        "memguard_pod_cache_retrying_seconds",
        "Backoff the pod cache is waiting out now (0: following).",
        cache.retrying_in_s,
    )


def container_targets(agent: Agent, kube: KubeFeatures | None) -> list[ContainerTarget]:
    """One entry per guarded container: its labels (namespace, pod, container from
    the pod cache when known, else empty; cgroup: its path under --parent) and the
    threshold its guard watches. Live objects only: no file is read here."""
    from memguard.reports.metrics import ContainerTarget

    prefix = agent.discovery.root.rstrip("/") + "/"
    targets = []
    for cgroup_dir, guard in list(agent.supervisor.guards.items()):
        namespace = pod = container = ""
        info = kube.cache.lookup(guard.ref.pod_uid) if kube is not None else None
        if info is not None:
            namespace, pod = info.namespace, info.name
            found = info.container(guard.ref.container_id)
            container = found.name if found is not None else ""
        cgroup = cgroup_dir.removeprefix(prefix)
        labels = (namespace, pod, container, cgroup)
        targets.append(ContainerTarget(cgroup_dir, labels, guard.armed_threshold_bytes))
    return targets


def build_labels(agent: Agent) -> tuple[str, str, str]:
    """memguard_build_info's version, python and cgroup_version."""
    try:
        version = importlib.metadata.version("memguard")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    cgroup_version = "2" if agent.backend.unified_settings else "1"
    return version, platform.python_version(), cgroup_version


def metrics_scraper(
    agent: Agent,
    kube: KubeFeatures | None,
    sink: MetricsSink,
    log_handler: NonBlockingHandler | None = None,
    http: HttpCounters | None = None,
) -> Scraper:
    """/metrics of this agent: its state, the sink's counts, build info, the
    per-container gauges (read through the backend) and the process' own figures."""
    from prometheus_client import ProcessCollector

    from memguard.reports.metrics import ContainerReader, Scraper, build_info

    info = build_info(*build_labels(agent))

    def state() -> Iterable[Metric]:
        yield info
        yield from state_metrics(agent, kube, log_handler, http)
        yield from sink.families()

    return Scraper(
        state,
        lambda: container_targets(agent, kube),
        ContainerReader(agent.backend.snapshot),
        [ProcessCollector(registry=None)],
    )


def routes(
    agent: Agent, metrics: Scraper | None = None, status: AsyncHandler | None = None
) -> dict[str, Any]:
    """metrics: /metrics (none without); status: the /status page
    (memguard.cli.statuspage), served beside the others."""

    def ready() -> tuple[int, str, bytes]:
        reasons = agent.current_status().not_ready_reasons()
        if not reasons:
            return 200, "text/plain", b"ready\n"
        return 503, "text/plain", ("not ready: " + "; ".join(reasons) + "\n").encode()

    table: dict[str, Any] = {
        "/healthz": lambda: (200, "text/plain", b"ok\n"),
        "/readyz": ready,
    }
    if metrics is not None:
        scraper = metrics

        async def scrape() -> tuple[int, str, bytes]:
            return 200, "text/plain; version=0.0.4; charset=utf-8", await scraper.scrape()

        table["/metrics"] = scrape
    if status is not None:
        table["/status"] = status
    return table
