"""The one composition root: from a RunConfig, everything `memguard run` runs.

It picks the backend (v1, v2 or a fake tree), opens Kubernetes, builds the
report bus and its sinks, memory QoS, the agent and the health endpoint - each
part is handed what it needs, ready, and nothing is wired afterwards. Only this
package imports memguard.fake.

Kubernetes (aiohttp, kubernetes-asyncio) and Prometheus code is imported only
when it is used: an agent without a cluster and without --listen does not pay
their memory (measured: +13 MiB RSS together).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import resource
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from memguard.backends.base import Backend, NamedService
from memguard.backends.hold import HoldLedger, HoldSettings
from memguard.backends.v1 import V1Backend
from memguard.backends.v2 import V2Backend, V2Settings
from memguard.cli.config import RunConfig
from memguard.cli.logsetup import NonBlockingHandler
from memguard.cli.observe import metrics_scraper, routes
from memguard.cli.statuspage import StatusPage, no_names, pod_namer
from memguard.cli.statussocket import RESERVED_FDS as STATUS_RESERVED_FDS
from memguard.cli.statussocket import StatusEndpoint, check_status_socket, open_status_socket
from memguard.errors import ConfigError
from memguard.fake import model as fake_model
from memguard.fake.backend import FakeBackend
from memguard.guarding.agent import Agent
from memguard.guarding.pods import NoOverrides, NoPodActions, OverridesSource, PodActions
from memguard.guarding.supervisor import ContainerListener
from memguard.guarding.swaptrigger import GracefulAct, SwapTrigger
from memguard.kernel import cgroup_v1, cgroup_v2
from memguard.kernel.fstype import FsKind, existing_ancestor, fs_kind
from memguard.kernel.hierarchy import CgroupLayout
from memguard.kernel.mounts import read_host
from memguard.kernel.names import CONTROLLERS_FILE
from memguard.kernel.psi import read_full_avg10
from memguard.kube.connection import find_connection, node_name_from
from memguard.qos.applier import MemoryQos, PodSource
from memguard.reports.bus import ReportBus, Sink
from memguard.reports.http import DEFAULT_MAX_CONNECTIONS, HealthServer, HttpCounters, bind
from memguard.reports.log_sink import LogSink
from memguard.units import parse_listen

if TYPE_CHECKING:
    from memguard.kube.features import KubeFeatures
    from memguard.reports.metrics import MetricsSink

log = logging.getLogger(__name__)


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
        with open(os.path.join(existing, CONTROLLERS_FILE)) as file:
            available = file.read().split()
    except OSError:
        return
    if "memory" not in available:
        raise ConfigError(
            f"--parent {parent}: the memory controller is not enabled there "
            "(add +memory to its parent's cgroup.subtree_control)"
        )


def v1_roots(parent: str, layout: CgroupLayout | None) -> tuple[str | None, str | None]:
    """The v1 memory and freezer hierarchies a parent is in: --cgroup-root's when the
    parent is under its memory hierarchy (in the DaemonSet, the host's, not this
    container's), else the ones this process sees mounted (/proc/self/mountinfo)."""
    if layout is not None and not layout.fake and layout.holds(parent):
        return layout.memory_root, layout.freezer_root
    _, mounts = read_host()
    return mounts.v1_memory, mounts.v1_freezer


def select_backend(
    parent: str,
    version: str = "auto",
    v2: V2Settings | None = None,
    hold: HoldSettings | None = None,
    layout: CgroupLayout | None = None,
) -> Backend:
    """The backend for the filesystem holding parent; ConfigError if none fits.
    Given hold settings (memguard run's composition), on v1 the hold ledger is
    settled here (backends.hold): a previous run's holds are released or taken
    over before any guard starts. Without them it only checks (and holds nothing).
    layout: --cgroup-root's, which places the v1 hierarchies (v1_roots)."""
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
        return _v1_backend(absolute, hold, layout)
    if hold is not None and hold.at_limit:
        _say_hold_is_v1_only(kind)
    if kind is FsKind.CGROUP_V2:
        _check_version(parent, "2", version)
        _check_v2_memory(parent, existing)
        _require_root()
        return V2Backend(v2)
    return _fake_backend(parent, absolute, version)


def _v1_backend(absolute: str, hold: HoldSettings | None, layout: CgroupLayout | None) -> Backend:
    """On v1, with hold settings: the hold ledger claimed and settled before any guard
    starts. Holding, this agent owns it until it exits (a ledger another agent
    holds, or one that cannot be trusted, is ConfigError); not holding, it only
    releases what a previous run left and lets go (backends.hold)."""
    memory_root, freezer_root = v1_roots(absolute, layout)
    if hold is None:
        return V1Backend(memory_root, freezer_root)
    ledger = HoldLedger(hold.ledger_dir, memory_root or os.path.dirname(absolute))
    ledger.open(holding=hold.at_limit)
    return V1Backend(memory_root, freezer_root, ledger if hold.at_limit else None)


def _say_hold_is_v1_only(kind: FsKind | None) -> None:
    log.info(
        "--hold-at-limit is for cgroup v1 (oom_kill_disable): it does nothing here%s",
        "; the memory.high tripwire (--high-tripwire) slows the allocator instead"
        if kind is FsKind.CGROUP_V2
        else "",
    )


def _fake_backend(parent: str, absolute: str, version: str) -> Backend:
    """A fake tree's backend, or ConfigError: parent is on no filesystem memguard knows."""
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


def http_connection_cap(fd_limit: int) -> int:
    """Open HTTP connections allowed: enough for any scraper and probe, never more
    than an eighth of the fds."""
    return min(DEFAULT_MAX_CONNECTIONS, max(16, fd_limit // 8))


def with_http_reserve(config: RunConfig, fd_limit: int) -> RunConfig:
    """The agent keeps the HTTP endpoint's (and the status socket's) connections
    out of its fd budget."""
    reserved = http_connection_cap(fd_limit) if config.listen else 0
    reserved += STATUS_RESERVED_FDS if config.status_socket != "off" else 0
    if not reserved:
        return config
    agent = dataclasses.replace(config.agent, reserved_fds=reserved)
    return dataclasses.replace(config, agent=agent)


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


async def open_kube_from(config: RunConfig) -> KubeFeatures | None:
    """Kubernetes features per --kubernetes/--kubeconfig, or None with one log line."""
    if config.kubernetes == "off":
        log.info("Kubernetes features are off (--kubernetes off)")
        return None
    connection = find_connection(config.kubeconfig or None, os.environ)
    if connection is None:
        log.info("Kubernetes features are off: not in a cluster, no --kubeconfig, no $KUBECONFIG")
        return None
    from memguard.kube.features import open_kube

    node = node_name_from(config.node_name, os.environ)
    return await open_kube(connection, node, explicit=bool(config.kubeconfig))


def pods_side(
    config: RunConfig, kube: KubeFeatures, bus: ReportBus
) -> tuple[OverridesSource, PodActions]:
    """Overrides and protection from the pod cache, evict/delete over the API server."""
    from memguard.kube.overrides import PodOverrides, own_pod_uid
    from memguard.kube.podactions import ApiPodActions

    own = own_pod_uid(os.environ)
    protection = config.protection
    log.info(
        "protected: namespaces %s, priority >= 2000000000 %s, memguard's own pod %s",
        ",".join(sorted(protection.namespaces)) or "none (--protected-namespaces '')",
        "acted on (--act-on-critical)" if protection.act_on_critical else "reported only",
        own or "not known ($POD_UID unset, no pod in /proc/self/cgroup)",
    )
    overrides = PodOverrides(kube.cache, protection, bus.publish, own)
    return overrides, ApiPodActions(kube.bridge, kube.client, kube.cache.lookup)


@dataclass
class Composed:
    """Everything `memguard run` runs: the agent and, with --listen, its endpoint."""

    agent: Agent
    server: HealthServer | None
    status: StatusEndpoint | None = None  # the status socket (memguard.cli.statussocket)


async def compose(config: RunConfig, log_handler: NonBlockingHandler | None = None) -> Composed:
    """Build it all; ConfigError (exit 2) before anything runs."""
    # Checked and bound first, so a bad --status-socket or --listen is exit 2, one
    # line, and nothing else was started (the socket is checked without making anything).
    await check_status_socket(config.status_socket)
    listeners = await bind_listen(config.listen) if config.listen else None
    backend = select_backend(
        config.agent.parent, config.cgroup_version, config.v2, config.hold, config.layout
    )
    if config.layout is not None and config.layout.holds(config.agent.parent):
        log.info("--cgroup-root %s: %s", config.cgroup_root, config.layout.describe())
    kube = await open_kube_from(config)
    sinks, services, metrics = _sinks(kube, with_metrics=listeners is not None)
    pods = kube.cache if kube is not None else None
    if pods is None and config.memory_qos is not None and config.memory_qos.enabled:
        log.warning(
            "memory QoS classes/annotations are configured, but Kubernetes is off: "
            "without pod annotations nothing is applied"
        )
    # The pods' side of the guards (issue 13): per-container overrides/protection and
    # eviction/delete, from memguard.kube when Kubernetes is on.
    bus = ReportBus(sinks, config.report_queue)
    overrides: OverridesSource = NoOverrides()
    pod_actions: PodActions = NoPodActions()
    if kube is not None:
        overrides, pod_actions = pods_side(config, kube, bus)
    agent, _ = build_agent(config, backend, sinks, services, pods, overrides, pod_actions, bus)
    page = StatusPage(agent, pod_namer(pods.lookup) if pods is not None else no_names)
    server = None
    if listeners is not None and metrics is not None:
        server = _health_server(config, listeners, agent, kube, metrics, log_handler, page)
    status = await open_status_socket(config.status_socket, page.answer, os.environ)
    return Composed(agent, server, status)


def _sinks(
    kube: KubeFeatures | None, with_metrics: bool
) -> tuple[list[Sink], list[NamedService], MetricsSink | None]:
    """The report sinks (log; Kubernetes Events; metrics with --listen) and the
    services they need (the pod cache)."""
    sinks: list[Sink] = [LogSink()]
    services: list[NamedService] = []
    if kube is not None:
        sinks.append(kube.sink)
        services.append(("pod-cache", kube.run))
    metrics = None
    if with_metrics:
        from memguard.reports.metrics import MetricsSink

        metrics = MetricsSink()
        sinks.append(metrics)
    return sinks, services, metrics


def _health_server(
    config: RunConfig,
    listeners: list[trio.SocketListener],
    agent: Agent,
    kube: KubeFeatures | None,
    metrics: MetricsSink,
    log_handler: NonBlockingHandler | None,
    page: StatusPage,
) -> HealthServer:
    """--listen's endpoint: /healthz, /readyz, /metrics and /status."""
    counters = HttpCounters()
    scraper = metrics_scraper(agent, kube, metrics, log_handler, counters)
    server = HealthServer(
        listeners, routes(agent, scraper, page.answer), config.agent.reserved_fds, counters
    )
    log.info("health and metrics on http://%s", config.listen)
    return server


def build_agent(
    config: RunConfig,
    backend: Backend,
    sinks: Sequence[Sink],
    services: Sequence[NamedService] = (),
    pods: PodSource | None = None,
    overrides: OverridesSource | None = None,
    pod_actions: PodActions | None = None,
    bus: ReportBus | None = None,
) -> tuple[Agent, MemoryQos | None]:
    """The agent with its report bus (made here unless given: over sinks) and, when
    configured, memory QoS (which it also returns: it is a service and a container
    listener of the agent)."""
    bus = bus if bus is not None else ReportBus(sinks, config.report_queue)
    qos = None
    if config.memory_qos is not None and config.memory_qos.enabled:
        page_bytes = os.sysconf("SC_PAGE_SIZE")
        dry_run = config.agent.settings.dry_run
        qos = MemoryQos(config.memory_qos, backend, bus.publish, page_bytes, dry_run, pods)
    named = [*services, (qos.component, qos.run)] if qos else list(services)
    listeners: list[ContainerListener] = [qos] if qos else []
    swap_act = GracefulAct()
    trigger = swap_trigger(config, backend, swap_act, overrides or NoOverrides())
    if trigger is not None:
        named.append((trigger.component, trigger.run))
        listeners.append(trigger)
    agent = Agent(
        config.agent,
        backend,
        bus,
        named,
        listeners,
        overrides=overrides,
        pod_actions=pod_actions,
    )
    swap_act.supervisor = agent.supervisor
    return agent, qos


def swap_trigger(
    config: RunConfig, backend: Backend, act: GracefulAct, overrides: OverridesSource
) -> SwapTrigger | None:
    """--swap-trigger: a service and a container listener of the agent; it acts
    through the victim's guard (the graceful path: act.supervisor, set once the
    agent exists)."""
    if config.swap is None:
        return None
    dry_run = config.agent.settings.dry_run
    if backend.unified_settings:  # cgroup v2 (or a fake v2 tree)
        return SwapTrigger(
            config.swap, act, overrides, cgroup_v2.read_swap, read_full_avg10, dry_run
        )
    return SwapTrigger(config.swap, act, overrides, cgroup_v1.read_swap, dry_run=dry_run)
