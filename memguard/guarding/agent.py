"""The agent: wires backend, inotify hub, discovery, guards and report sinks.

Task tree (one trio nursery tree):
    services nursery    services (pod cache, health endpoint)
      reports nursery   report delivery (one task per sink)
        guards nursery  inotify hub, discovery, one guard per container cgroup
stop() cancels the guards nursery (guards unregister, fds close), then the
report queues drain for at most shutdown_drain_s (sinks still have their
services, e.g. the pod cache), then the services stop.
"""

from __future__ import annotations

import functools
import logging
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from memguard.backends.base import Backend, Service
from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.v1 import V1Backend
from memguard.backends.v2 import V2Backend, V2Settings
from memguard.components import ComponentStatus, supervise
from memguard.errors import ConfigError
from memguard.fake import model as fake_model
from memguard.fake.backend import FakeBackend
from memguard.guarding.actions import Flusher, Killer
from memguard.guarding.discovery import Discovery, MatchMode
from memguard.guarding.guard import GuardContext
from memguard.guarding.supervisor import FdBudget, GuardSupervisor
from memguard.kernel.fstype import FsKind, existing_ancestor, fs_kind
from memguard.policy.margin import granularity_raised_margin
from memguard.policy.model import GuardSettings
from memguard.policy.qos import QosConfig
from memguard.qos.applier import MemoryQos
from memguard.reports.bus import DEFAULT_QUEUE_CAPACITY, ReportBus, Sink
from memguard.units import format_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    parent: str
    settings: GuardSettings
    match: MatchMode = MatchMode.CONTAINERS
    rescan_interval_s: float = 60.0
    flush_timeout_s: float = 5.0
    max_parallel_flushes: int = 2
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    shutdown_drain_s: float = 5.0
    cgroup_version: str = "auto"  # auto | 1 | 2
    v2: V2Settings = field(default_factory=V2Settings)
    memory_qos: QosConfig | None = None  # classes / unifiedannotations from --config
    reserved_fds: int = 0  # kept free beyond the agent's own (the HTTP endpoint's connections)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError(
            "memguard run needs root on a real cgroupfs (it writes cgroup control files "
            "and kills): run it as root or in the DaemonSet"
        )


def _check_version(parent: str, found: str, wanted: str) -> None:
    if wanted not in ("auto", found):
        raise ConfigError(f"--cgroup-version {wanted}, but --parent {parent} is on cgroup v{found}")


def _check_v2_memory(parent: str, existing: str) -> None:
    """On v2 the parent must have the memory controller (else no memory.* files)."""
    if existing != os.path.abspath(parent):
        return  # a parent still to be created: guards wait for their files
    try:
        with open(os.path.join(existing, "cgroup.controllers")) as file:
            available = file.read().split()
    except OSError:
        return
    if "memory" not in available:
        raise ConfigError(
            f"--parent {parent}: the memory controller is not enabled there "
            "(add +memory to its parent's cgroup.subtree_control)"
        )


def select_backend(parent: str, version: str = "auto", v2: V2Settings | None = None) -> Backend:
    """The backend for the filesystem holding parent; ConfigError if none fits."""
    absolute = os.path.abspath(parent)
    if not os.path.isdir(os.path.dirname(absolute)):
        raise ConfigError(f"--parent {parent}: {os.path.dirname(absolute)} does not exist")
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise ConfigError(f"--parent {parent}: not a directory")
    existing = existing_ancestor(absolute)
    kind = fs_kind(existing)
    if kind is FsKind.CGROUP_V1:
        _check_version(parent, "1", version)
        _require_root()
        return V1Backend()
    if kind is FsKind.CGROUP_V2:
        _check_version(parent, "2", version)
        _check_v2_memory(parent, existing)
        _require_root()
        return V2Backend(v2)
    root = fake_model.find_marker(absolute)
    if root is not None:
        tree_version = fake_model.tree_cgroup_version(root)
        _check_version(parent, str(tree_version), version)
        return FakeBackend(tree_version)
    raise ConfigError(
        f"--parent {parent} is neither on a cgroup filesystem (v1 memory or v2) nor inside "
        "a fake tree (make one with: memguard fake init DIR)"
    )


def raise_fd_limit() -> int:
    """One eventfd per guarded cgroup plus pidfds: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# Component names (metrics, logs, /readyz) of the services the agent runs.
_SERVICE_NAMES = {
    "HealthServer": "http",
    "KubeFeatures": "pod-cache",
    "MemoryQos": "memory-qos",
    "Poller": "v2-poller",
}
TRANSIENT_FDS = 64  # kept free for reads, flushes, registrations and pidfds of kills


def component_name(service: Service) -> str:
    owner = getattr(service, "__self__", None)
    name = type(owner).__name__ if owner is not None else getattr(service, "__name__", "")
    return _SERVICE_NAMES.get(name, name.lower() or "service")


def open_fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


@dataclass(frozen=True)
class AgentStatus:
    """What the agent is doing, read at once (metrics, /readyz, tests)."""

    discovered: bool
    guarded: int
    armed: int
    waiting_for_fds: int
    components_down: dict[str, str]
    degraded: dict[str, str]
    component_failures: dict[str, int]
    discovery_degraded: dict[str, int]
    discovery_errors: dict[str, int]

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if not self.discovered:
            reasons.append("discovery has not run yet")
        if "discovery" in self.components_down:
            reasons.append(f"discovery failed ({self.components_down['discovery']}), restarting")
        if self.armed < self.guarded:
            reasons.append(f"{self.guarded - self.armed} of {self.guarded} guards not armed yet")
        if self.waiting_for_fds:
            reasons.append(f"{self.waiting_for_fds} containers unguarded: out of file descriptors")
        return reasons


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        sinks: Sequence[Sink],
        backend: Backend | None = None,
        services: Sequence[Service] = (),
        status: ComponentStatus | None = None,
    ) -> None:
        self.config = config
        self.backend = (
            backend
            if backend is not None
            else select_backend(config.parent, config.cgroup_version, config.v2)
        )
        self.status = status or ComponentStatus()
        self.hub = InotifyHub(self.status)
        self.bus = ReportBus(sinks, config.queue_capacity)
        self._services = list(services)
        self.discovered = False  # the first full scan has run
        settings = config.settings
        self._context_parts = (
            Flusher(self.backend, config.flush_timeout_s, config.max_parallel_flushes),
            Killer(self.backend, frozenset({os.getpid()}), settings.dry_run),
        )
        self.memory_qos = (
            MemoryQos(
                config.memory_qos,
                self.backend,
                self.bus.publish,
                os.sysconf("SC_PAGE_SIZE"),
                settings.dry_run,
            )
            if config.memory_qos is not None and config.memory_qos.enabled
            else None
        )
        if self.memory_qos is not None:
            self._services.append(self.memory_qos.run)
        self._inner: trio.Nursery | None = None
        self._stop_requested = False
        self.supervisor: GuardSupervisor | None = None
        self.discovery: Discovery | None = None

    def add_service(self, service: Service) -> None:
        """Run service beside the agent (before run() is called)."""
        self._services.append(service)

    def stop(self) -> None:
        """Stop guarding, then let reports drain (bounded)."""
        self._stop_requested = True
        if self._inner is not None:
            self._inner.cancel_scope.cancel()

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

    def current_status(self) -> AgentStatus:
        supervisor, discovery = self.supervisor, self.discovery
        guards = list(supervisor.guards.values()) if supervisor else []
        return AgentStatus(
            discovered=self.discovered,
            guarded=len(supervisor.guarded) if supervisor else 0,
            armed=sum(1 for guard in guards if guard.armed),
            waiting_for_fds=len(supervisor.waiting) if supervisor else 0,
            components_down=dict(self.status.down),
            degraded=dict(self.status.degraded),
            component_failures=dict(self.status.failures),
            discovery_degraded=dict(discovery.degraded_by_cause()) if discovery else {},
            discovery_errors=dict(discovery.errors) if discovery else {},
        )

    def ready(self) -> bool:
        """Discovery runs and every container found is guarded and armed."""
        return not self.current_status().not_ready_reasons()

    def _fd_budget(self) -> FdBudget:
        reserved = open_fd_count() + TRANSIENT_FDS + self.config.reserved_fds
        return FdBudget(self.backend.fds_per_guard, reserved)

    async def _guard_until_stopped(self, task_status: trio.TaskStatus[None]) -> None:
        flusher, killer = self._context_parts
        async with trio.open_nursery() as inner:
            self._inner = inner
            if self._stop_requested:
                inner.cancel_scope.cancel()
            await inner.start(supervise, "inotify", self.hub.run, self.status)
            for backend_service in self.backend.services():
                name = component_name(backend_service)
                await inner.start(supervise, name, backend_service, self.status)
            context = GuardContext(
                self.backend,
                self.hub,
                self.config.settings,
                flusher,
                killer,
                self.bus.publish,
                self.memory_qos,
                self.status,
            )
            self.supervisor = GuardSupervisor(inner, context, self.status, self._fd_budget())
            self.discovery = Discovery(
                self.config.parent,
                self.config.match,
                self.hub,
                self.supervisor.start,
                self.supervisor.stop,
                self.backend.mounted,
            )
            discovery_run = functools.partial(self.discovery.run, self.config.rescan_interval_s)
            await inner.start(supervise, "discovery", discovery_run, self.status)
            self.discovered = True
            log.info("discovery done: guarding %d cgroups", len(self.supervisor.guarded))
            task_status.started()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._log_start()
        with self.hub:
            async with trio.open_nursery() as services:
                for service in self._services:
                    name = component_name(service)
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
