"""`memguard run`: the composition root. Builds the agent, its sinks and
services (pod cache, health endpoint), runs it under trio and stops it
cleanly on SIGTERM or SIGINT.

Kubernetes (aiohttp, kubernetes-asyncio) and Prometheus code is imported only
when it is used: an agent without a cluster and without --listen does not pay
their memory (measured: +13 MiB RSS together).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from memguard.backends.base import Service
from memguard.cli.logsetup import NonBlockingHandler, configure
from memguard.components import fatal_in
from memguard.errors import ConfigError
from memguard.guarding.agent import Agent, AgentConfig, raise_fd_limit, select_backend
from memguard.kube.connection import find_connection, node_name_from
from memguard.reports.bus import Sink
from memguard.reports.http import DEFAULT_MAX_CONNECTIONS, HealthServer, HttpCounters, bind
from memguard.reports.log_sink import LogSink
from memguard.units import parse_listen

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from memguard.kube.features import KubeFeatures

log = logging.getLogger(__name__)


async def serve_async(agent: Agent) -> None:
    async with trio.open_nursery() as nursery:
        # Listen before the agent starts, so an early SIGTERM is not lost.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    agent.stop()
                    return

            nursery.start_soon(stop_on_signal)
            await agent.run()
            nursery.cancel_scope.cancel()


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
    supervisor = agent.supervisor
    yield counter(
        "memguard_guard_failures",
        "Guards that failed and were restarted.",
        {"all": supervisor.failures if supervisor else 0},
        "guard",
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


def routes(agent: Agent, registry: CollectorRegistry) -> dict[str, Any]:
    from memguard.reports.metrics import render

    def ready() -> tuple[int, str, bytes]:
        reasons = agent.current_status().not_ready_reasons()
        if not reasons:
            return 200, "text/plain", b"ready\n"
        return 503, "text/plain", ("not ready: " + "; ".join(reasons) + "\n").encode()

    return {
        "/healthz": lambda: (200, "text/plain", b"ok\n"),
        "/readyz": ready,
        "/metrics": lambda: (200, "text/plain; version=0.0.4", render(registry)),
    }


def http_connection_cap(fd_limit: int) -> int:
    """Open HTTP connections allowed: enough for any scraper and probe, never more
    than an eighth of the fds."""
    return min(DEFAULT_MAX_CONNECTIONS, max(16, fd_limit // 8))


async def bind_listen(text: str) -> list[trio.SocketListener]:
    """Listeners for --listen, or ConfigError (exit 2) with the reason in one line."""
    host, port = parse_listen(text)
    try:
        return await bind(host, port)
    except socket.gaierror as error:
        raise ConfigError(f"--listen {text}: cannot resolve {host!r} ({error.strerror})") from None
    except OSError as error:
        reason = {
            errno.EADDRINUSE: f"port {port} is already in use",
            errno.EADDRNOTAVAIL: f"{host} is not an address of this host",
            errno.EACCES: f"no permission to listen on port {port}",
        }.get(error.errno or 0, error.strerror or str(error))
        raise ConfigError(f"--listen {text}: {reason}") from None


async def open_kube_from(values: Mapping[str, Any]) -> KubeFeatures | None:
    """Kubernetes features per --kubernetes/--kubeconfig, or None with one log line."""
    if values["kubernetes"] == "off":
        log.info("Kubernetes features are off (--kubernetes off)")
        return None
    connection = find_connection(values["kubeconfig"] or None, os.environ)
    if connection is None:
        log.info("Kubernetes features are off: not in a cluster, no --kubeconfig, no $KUBECONFIG")
        return None
    from memguard.kube.features import open_kube

    node = node_name_from(values["node_name"], os.environ)
    return await open_kube(connection, node, explicit=bool(values["kubeconfig"]))


async def _main(
    config: AgentConfig, values: Mapping[str, Any], log_handler: NonBlockingHandler
) -> None:
    # Bound before anything starts, so a bad --listen is exit 2 and nothing else ran.
    listeners = await bind_listen(values["listen"]) if values["listen"] else None
    kube = await open_kube_from(values)
    sinks: list[Sink] = [LogSink()]
    services: list[Service] = []
    if kube is not None:
        sinks.append(kube.sink)
        services.append(kube.run)
    if listeners is not None:
        from prometheus_client import CollectorRegistry

        from memguard.reports.metrics import MetricsSink

        registry = CollectorRegistry()
        sinks.append(MetricsSink(registry))
    agent = Agent(config, sinks, services=services)
    if agent.memory_qos is not None:
        if kube is None:
            log.warning(
                "memory QoS classes/annotations are configured, but Kubernetes is off: "
                "without pod annotations nothing is applied"
            )
        else:
            agent.memory_qos.follow(kube.cache)
    if listeners is not None:
        from memguard.reports.metrics import StateCollector

        counters = HttpCounters()
        registry.register(StateCollector(lambda: state_metrics(agent, kube, log_handler, counters)))
        server = HealthServer(listeners, routes(agent, registry), config.reserved_fds, counters)
        log.info("health and metrics on http://%s", values["listen"])
        agent.add_service(server.run)
    await serve_async(agent)


def serve(config: AgentConfig, values: Mapping[str, Any]) -> int:
    log_handler = configure(
        values["log_format"], values["log_level"], queue_lines=values["log_queue"]
    )
    try:
        select_backend(config.parent, config.cgroup_version, config.v2)  # ConfigError: exit 2
        fd_limit = raise_fd_limit()
        if values["listen"]:
            config = dataclasses.replace(config, reserved_fds=http_connection_cap(fd_limit))
        try:
            trio.run(_main, config, values, log_handler)
        except BaseExceptionGroup as group:
            fatal = fatal_in(group)
            if fatal is None:
                raise
            raise fatal from None
    finally:
        log_handler.close()
    return 0
