"""The agent: discovery, the inotify hub and one guard per container, on a backend.

It receives everything ready from the composition root (memguard.cli.compose):
the backend, the report bus with its sinks, the services that live as long as
the guards (the pod cache, memory QoS) and the container listeners (memory
QoS). Nothing is wired after construction.

Task tree (one trio nursery tree):
    services nursery    services, each under supervise()
      reports nursery   report delivery (one task per sink)
        guards nursery  inotify hub, backend services, the guard supervisor
                        (its own nursery: one task per guard), discovery
stop() cancels the guards nursery (guards unregister, fds close), then the
report queues drain for at most shutdown_drain_s (sinks still have their
services, e.g. the pod cache), then the services stop.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from memguard.backends.base import Backend, NamedService
from memguard.backends.inotify_hub import InotifyHub
from memguard.components import ComponentStatus, supervise
from memguard.guarding.discovery import Discovery, MatchMode
from memguard.guarding.flusher import Flusher
from memguard.guarding.guard import GuardContext
from memguard.guarding.killer import Killer
from memguard.guarding.pods import NoOverrides, NoPodActions, OverridesSource, PodActions
from memguard.guarding.supervisor import ContainerListener, FdBudget, GuardSupervisor
from memguard.policy.margin import granularity_raised_margin
from memguard.policy.model import GuardSettings
from memguard.policy.paths import ContainerRef
from memguard.reports.bus import ReportBus
from memguard.reports.report import Report, ReportKind
from memguard.units import format_duration, format_size

log = logging.getLogger(__name__)

TRANSIENT_FDS = 64  # kept free for reads, flushes, registrations and pidfds of kills


@dataclass(frozen=True)
class AgentConfig:
    parent: str
    settings: GuardSettings
    match: MatchMode = MatchMode.CONTAINERS
    rescan_interval_s: float = 60.0
    flush_timeout_s: float = 5.0
    max_parallel_flushes: int = 2
    shutdown_drain_s: float = 5.0
    reserved_fds: int = 0  # kept free beyond the agent's own (the HTTP endpoint's connections)
    parent_alternatives: tuple[str, ...] = ()  # --parent auto: the other kubelet driver's tree
    parent_wait_s: float = 60.0  # --parent-wait: then a missing parent is reported, once
    parent_hint: str = ""  # the likely cause of a missing parent (memguard.cli.config)


@dataclass(frozen=True)
class AgentStatus:
    """What the agent is doing, read at once (metrics, /readyz, `memguard status`)."""

    discovered: bool
    guarded: int
    armed: int
    waiting_for_fds: int
    inotify_watches: int
    components_down: dict[str, str]
    degraded: dict[str, str]
    component_failures: dict[str, int]
    guard_failures: int
    discovery_degraded: dict[str, int]
    discovery_errors: dict[str, int]
    parent: str = ""
    parent_missing_s: float | None = None  # None: the parent exists (or not looked at yet)
    parent_wait_s: float = 60.0
    parent_hint: str = ""

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if not self.discovered:
            reasons.append("discovery has not run yet")
        if self.parent_missing_s is not None:
            reasons.append(self.missing_parent_reason())
        if "discovery" in self.components_down:
            reasons.append(f"discovery failed ({self.components_down['discovery']}), restarting")
        if self.armed < self.guarded:
            reasons.append(f"{self.guarded - self.armed} of {self.guarded} guards not armed yet")
        if self.waiting_for_fds:
            reasons.append(f"{self.waiting_for_fds} containers unguarded: out of file descriptors")
        return reasons

    def missing_parent_reason(self) -> str:
        missing_s = self.parent_missing_s or 0.0
        waited = format_duration(float(int(missing_s)))
        wait = format_duration(self.parent_wait_s)
        if missing_s < self.parent_wait_s:
            return (
                f"parent {self.parent} does not exist yet (waiting {waited}, --parent-wait {wait})"
            )
        return (
            f"parent {self.parent} missing for {waited} (--parent-wait {wait}), nothing "
            f"guarded; likely cause: {self.parent_hint or 'is --parent right?'}"
        )


def open_fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return TRANSIENT_FDS


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        backend: Backend,
        bus: ReportBus,
        services: Sequence[NamedService] = (),
        listeners: Sequence[ContainerListener] = (),
        status: ComponentStatus | None = None,
        overrides: OverridesSource | None = None,
        pod_actions: PodActions | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.bus = bus
        self.status = status or ComponentStatus()
        self.hub = InotifyHub(self.status)
        self._services = tuple(services)
        self.discovered = False  # the first full scan has run
        self.flusher = Flusher(backend, config.flush_timeout_s, config.max_parallel_flushes)
        self.killer = Killer(backend, frozenset({os.getpid()}), config.settings.dry_run)
        context = self._guard_context(overrides or NoOverrides(), pod_actions or NoPodActions())
        reserved = open_fd_count() + TRANSIENT_FDS + config.reserved_fds
        budget = FdBudget(backend.fds_per_guard, reserved)
        self.supervisor = GuardSupervisor(context, self.status, budget, listeners)
        self.discovery = self._new_discovery()
        self._inner: trio.Nursery | None = None
        self._stop_requested = False

    def _guard_context(self, overrides: OverridesSource, pod_actions: PodActions) -> GuardContext:
        """What every guard shares: the backend, the hub, the settings, the actions."""
        return GuardContext(
            self.backend,
            self.hub,
            self.config.settings,
            self.flusher,
            self.killer,
            self.bus.publish,
            overrides,
            pod_actions,
        )

    def _new_discovery(self) -> Discovery:
        """Discovery under --parent: it starts and stops guards through the supervisor."""
        config = self.config
        return Discovery(
            config.parent,
            config.match,
            self.hub,
            self.supervisor.start,
            self.supervisor.stop,
            self.backend.mounted,
            config.parent_alternatives,
            config.parent_wait_s,
            self._parent_missing,
        )

    def stop(self) -> None:
        """Stop guarding, then let reports drain (bounded)."""
        self._stop_requested = True
        if self._inner is not None:
            self._inner.cancel_scope.cancel()

    def _parent_missing(self, parent: str, missing_s: float) -> None:
        """Once per absence (memguard.guarding.parentwait): a log warning and a Warning
        Event on the Node (no pod is known: the report's sinks say it)."""
        status = self.current_status()
        self.bus.publish(
            Report(
                kind=ReportKind.PARENT_MISSING,
                cgroup=parent,
                ref=ContainerRef(None, None, None, None, "parent"),
                usage_bytes=0,
                limit_bytes=None,
                threshold_bytes=None,
                policy=self.config.settings.policy.value,
                action="not guarding",
                reason=status.missing_parent_reason(),
                dry_run=self.config.settings.dry_run,
                wall_time_s=time.time(),
            )
        )

    def current_status(self) -> AgentStatus:
        supervisor, discovery = self.supervisor, self.discovery
        since_s = discovery.parent_wait.missing_since_s
        return AgentStatus(
            discovered=self.discovered,
            guarded=len(supervisor.guarded),
            armed=supervisor.armed,
            waiting_for_fds=len(supervisor.waiting),
            inotify_watches=self.hub.watch_count,
            components_down=dict(self.status.down),
            degraded=dict(self.status.degraded),
            component_failures=dict(self.status.failures),
            guard_failures=supervisor.failures,
            discovery_degraded=dict(discovery.degraded_by_cause()),
            discovery_errors=dict(discovery.errors),
            parent=discovery.root,
            parent_missing_s=None if since_s is None else trio.current_time() - since_s,
            parent_wait_s=self.config.parent_wait_s,
            parent_hint=self.config.parent_hint,
        )

    def ready(self) -> bool:
        """Discovery runs and every container found is guarded and armed."""
        return not self.current_status().not_ready_reasons()

    def _log_start(self) -> None:
        settings = self.config.settings
        log.info(
            "memguard starting: parent %s, backend %s, policy %s%s, match %s",
            self.config.parent,
            self.backend.name,
            settings.policy.value,
            " (dry run)" if settings.dry_run else "",
            self.config.match.value,
        )
        if granularity_raised_margin(settings):
            log.info(
                "margin floor raised from %s to %s: the kernel checks thresholds only "
                "every 128 pages per CPU (%d CPUs)",
                format_size(settings.min_margin_bytes),
                format_size(settings.check_granularity_bytes),
                os.cpu_count() or 1,
            )

    async def _guard_until_stopped(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as inner:
            self._inner = inner
            if self._stop_requested:
                inner.cancel_scope.cancel()
            await inner.start(supervise, "inotify", self.hub.run, self.status)
            for name, backend_service in self.backend.services():
                await inner.start(supervise, name, backend_service, self.status)
            await inner.start(self.supervisor.run)
            discovery_run = functools.partial(self.discovery.run, self.config.rescan_interval_s)
            await inner.start(supervise, "discovery", discovery_run, self.status)
            self.discovered = True
            self.supervisor.changes.notify()
            log.info("discovery done: guarding %d cgroups", len(self.supervisor.guarded))
            task_status.started()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._log_start()
        self.killer.pidfds.probe()  # a refused pidfd syscall is said now, not at a kill
        with self.hub:
            async with trio.open_nursery() as services:
                for name, service in self._services:
                    await services.start(supervise, name, service, self.status)
                async with trio.open_nursery() as reports:
                    reports.start_soon(self.bus.run, self.status)
                    await self._guard_until_stopped(task_status)
                    self.bus.close()
                    reports.cancel_scope.deadline = (
                        trio.current_time() + self.config.shutdown_drain_s
                    )
                services.cancel_scope.cancel()
        log.info("memguard stopped")
