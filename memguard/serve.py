"""`memguard run`: the composition root. Builds the agent, its sinks and
services (pod cache, health endpoint), runs it under trio and stops it
cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable, Mapping
from typing import Any

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from memguard.agent import Agent, AgentConfig, Service, raise_fd_limit, select_backend
from memguard.health import HealthServer
from memguard.kube.features import KubeFeatures, kube_from_options
from memguard.log_sink import LogSink
from memguard.logsetup import configure
from memguard.metrics import MetricsSink, StateCollector, counter, gauge, render
from memguard.reporting import Sink
from memguard.units import parse_listen

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


def state_metrics(agent: Agent, kube: KubeFeatures | None) -> Iterable[Metric]:
    supervisor = agent.supervisor
    yield gauge(
        "memguard_guarded_cgroups",
        "Container cgroups being guarded.",
        len(supervisor.guarded) if supervisor else 0,
    )
    yield gauge("memguard_ready", "1 once every discovered cgroup is armed.", agent.ready())
    yield counter(
        "memguard_guard_failures",
        "Guards that failed and were restarted.",
        {"all": supervisor.failures if supervisor else 0},
        "guard",
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
    if kube is not None:
        yield counter(
            "memguard_kube_events",
            "Kubernetes Event posts by outcome.",
            dict(kube.poster.counts),
            "outcome",
        )
        yield gauge("memguard_pod_cache_pods", "Pods on this node in the cache.", len(kube.cache))
        yield counter(
            "memguard_pod_cache_relists",
            "Full pod lists (start, 410 Gone).",
            {"all": kube.cache.relists},
            "cache",
        )


def _routes(agent: Agent, registry: CollectorRegistry) -> dict[str, Any]:
    def ready() -> tuple[int, str, bytes]:
        return (
            (200, "text/plain", b"ready\n")
            if agent.ready()
            else (503, "text/plain", b"not ready: discovery or arming in progress\n")
        )

    return {
        "/healthz": lambda: (200, "text/plain", b"ok\n"),
        "/readyz": ready,
        "/metrics": lambda: (200, "text/plain; version=0.0.4", render(registry)),
    }


async def _main(config: AgentConfig, values: Mapping[str, Any]) -> None:
    kube = await kube_from_options(values["kubernetes"], values["kubeconfig"], values["node_name"])
    registry = CollectorRegistry()
    sinks: list[Sink] = [LogSink(), MetricsSink(registry)]
    services: list[Service] = []
    if kube is not None:
        sinks.append(kube.sink)
        services.append(kube.run)
    agent = Agent(config, sinks, services=services)
    if values["listen"]:
        host, port = parse_listen(values["listen"])
        agent.add_service(HealthServer(host, port, _routes(agent, registry)).run)
    registry.register(StateCollector(lambda: state_metrics(agent, kube)))
    await serve_async(agent)


def serve(config: AgentConfig, values: Mapping[str, Any]) -> int:
    configure(values["log_format"], values["log_level"])
    select_backend(config.parent)  # a ConfigError here, before anything starts
    raise_fd_limit()
    trio.run(_main, config, values)
    return 0
