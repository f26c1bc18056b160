"""Turning resolved `memguard run` options into the one frozen RunConfig.

RunConfig is the whole configuration of `memguard run`; the composition root
(memguard.cli.compose) builds everything from it and hands each part its share
(the agent its AgentConfig, the v2 backend its V2Settings, ...).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memguard.backends.hold import HoldSettings
from memguard.backends.v2 import Tripwire, V2Settings
from memguard.cli.options import DEFAULT_CGROUP_ROOT
from memguard.errors import ConfigError, KernelError
from memguard.fake import model as fake_model
from memguard.guarding.agent import AgentConfig
from memguard.guarding.discovery import MatchMode
from memguard.kernel.fstype import FsKind, existing_ancestor, fs_kind
from memguard.kernel.hierarchy import CgroupLayout, choose_layout, missing_parent_hint, probe
from memguard.policy.annotations import Protection
from memguard.policy.model import GracefulVia, GuardSettings, Policy, check_granularity_bytes
from memguard.policy.poll import PollSettings
from memguard.policy.qos import QosConfig
from memguard.policy.swap import SwapSettings


@dataclass(frozen=True)
class RunConfig:
    agent: AgentConfig
    cgroup_version: str = "auto"  # auto | 1 | 2
    v2: V2Settings = field(default_factory=V2Settings)
    hold: HoldSettings = field(default_factory=HoldSettings)  # --hold-at-limit (v1)
    memory_qos: QosConfig | None = None  # classes / unifiedannotations from --config
    report_queue: int = 1024
    log_queue: int = 4096
    log_format: str = "text"
    log_level: str = "info"
    listen: str = ""
    status_socket: str = "auto"  # auto | off | a path (memguard.cli.statussocket)
    kubernetes: str = "auto"
    kubeconfig: str = ""
    node_name: str = ""
    # --protected-namespaces, --act-on-critical (with Kubernetes: memguard.kube.overrides)
    protection: Protection = field(default_factory=Protection)
    priority: str = "auto"  # auto | off (memguard.cli.priority)
    cgroup_root: str = DEFAULT_CGROUP_ROOT
    # What --cgroup-root holds; None when it was not needed (an explicit --parent)
    # and is no cgroupfs root (memguard.kernel.hierarchy).
    layout: CgroupLayout | None = None
    swap: SwapSettings | None = None  # --swap-trigger (None: off)


def read_layout(root: str) -> CgroupLayout:
    """The layout under --cgroup-root: statfs (memguard.kernel.hierarchy), a fake
    tree known by its marker; ConfigError (one line) when there is none."""
    absolute = os.path.abspath(root)
    try:
        seen = probe(absolute)
        marker = fake_model.find_marker(absolute) if seen.root is FsKind.OTHER else None
        if marker is not None and seen.directory:
            seen = dataclasses.replace(seen, fake_version=fake_model.tree_cgroup_version(marker))
    except (KernelError, OSError, ValueError) as error:
        raise ConfigError(f"--cgroup-root {root}: {error}") from None
    return choose_layout(absolute, seen)


def layout_for(values: Mapping[str, Any]) -> CgroupLayout | None:
    """--cgroup-root's layout. Needed by --parent auto, and an explicit --cgroup-root
    must be usable (else ConfigError); the default root beside an explicit --parent
    (a fake tree, a test cgroup) only serves when it is a cgroupfs root."""
    root = values["cgroup_root"]
    needed = values["parent"] == "auto" or os.path.abspath(root) != DEFAULT_CGROUP_ROOT
    try:
        return read_layout(root)
    except ConfigError:
        if needed:
            raise
        return None


def resolve_parent(
    parent: str, version: str, layout: CgroupLayout | None
) -> tuple[str, tuple[str, ...]]:
    """The tree to guard and the alternatives discovery also waits for. --parent
    auto: the kubelet's tree under --cgroup-root, kubepods or kubepods.slice -
    the one that exists, else the usual driver's (the other one the alternative)."""
    if parent != "auto":
        return parent, ()
    if layout is None:
        raise ConfigError("--parent auto needs a usable --cgroup-root")
    if version not in ("auto", layout.version):
        raise ConfigError(
            f"--cgroup-version {version}, but under --cgroup-root {layout.root} the memory "
            f"controller is {layout.describe()}"
        )
    candidates = layout.kubepods_candidates()
    chosen = next((path for path in candidates if os.path.isdir(path)), candidates[0])
    return chosen, tuple(path for path in candidates if path != chosen)


def parent_hint(parent: str, auto: bool, layout: CgroupLayout | None) -> str:
    """What /readyz and the Node Event say of a parent that stays missing, worked out
    at start as if it were (memguard.kernel.hierarchy.missing_parent_hint)."""
    absolute = os.path.abspath(parent)
    ancestor = existing_ancestor(os.path.dirname(absolute))
    try:
        kind = fs_kind(ancestor)
    except KernelError:
        kind = None
    fake = fake_model.find_marker(ancestor) is not None
    return missing_parent_hint(absolute, auto, layout, ancestor, kind, fake)


def _check_graceful_via(values: Mapping[str, Any]) -> None:
    """--graceful-via evict|delete asks the API server: refused with --kubernetes off."""
    via = values["graceful_via"]
    if via != "process" and values["kubernetes"] == "off":
        raise ConfigError(
            f"--graceful-via {via} {'evicts' if via == 'evict' else 'deletes'} the pod "
            "through the API server, but --kubernetes is off (use --graceful-via process, "
            "SIGTERM to the main process)"
        )


def run_warnings(values: Mapping[str, Any]) -> list[str]:
    """What is accepted but probably not meant, for one warning line each at start.

    --graceful-via is the graceful path's way to stop a container: --policy
    graceful's, the swap trigger's, and that of pods annotated
    memguard.io/policy: graceful. With another --policy and no swap trigger only
    such pods use it.
    """
    via = values["graceful_via"]
    if via == "process" or values["policy"] == "graceful" or values["swap_trigger"]:
        return []
    return [
        f"--graceful-via {via} only applies to --policy graceful and --swap-trigger: with "
        f"--policy {values['policy']} only pods annotated memguard.io/policy: graceful use it"
    ]


def build_run_config(values: Mapping[str, Any]) -> RunConfig:
    _check_graceful_via(values)
    layout = layout_for(values)
    return RunConfig(
        agent=build_agent_config(values, layout),
        cgroup_root=values["cgroup_root"],
        layout=layout,
        cgroup_version=values["cgroup_version"],
        v2=build_v2_settings(values),
        hold=HoldSettings(
            # a dry run changes nothing in the containers
            at_limit=values["hold_at_limit"] and not values["dry_run"],
            ledger_dir=values["hold_ledger"],
        ),
        memory_qos=values.get("memory_qos"),
        report_queue=values["report_queue"],
        log_queue=values["log_queue"],
        log_format=values["log_format"],
        log_level=values["log_level"],
        listen=values["listen"],
        status_socket=values["status_socket"],
        kubernetes=values["kubernetes"],
        kubeconfig=values["kubeconfig"],
        node_name=values["node_name"],
        protection=Protection(values["protected_namespaces"], values["act_on_critical"]),
        priority=values["priority"],
        swap=build_swap_settings(values),
    )


def _check_margins(values: Mapping[str, Any], name: str) -> None:
    """--min-NAME <= --max-NAME, and 0 < --NAME-ratio < 0.5."""
    flag = name.replace("_", "-")
    low, high = values[f"min_{name}"], values[f"max_{name}"]
    if low > high:
        raise ConfigError(f"--min-{flag} ({low} bytes) is larger than --max-{flag} ({high} bytes)")
    if not 0 < values[f"{name}_ratio"] < 0.5:
        raise ConfigError(f"--{flag}-ratio must be above 0 and below 0.5 (50%)")


def build_agent_config(
    values: Mapping[str, Any], layout: CgroupLayout | None = None
) -> AgentConfig:
    """The agent's share; layout: --cgroup-root's (read here when --parent is auto
    and it was not given)."""
    settings = build_guard_settings(values)
    if layout is None and values["parent"] == "auto":
        layout = read_layout(values["cgroup_root"])
    parent, alternatives = resolve_parent(values["parent"], values["cgroup_version"], layout)
    return AgentConfig(
        parent=parent,
        parent_alternatives=alternatives,
        parent_wait_s=values["parent_wait"],
        parent_hint=parent_hint(parent, values["parent"] == "auto", layout),
        settings=settings,
        match=MatchMode(values["match"]),
        rescan_interval_s=values["rescan_interval"],
        flush_timeout_s=values["flush_timeout"],
    )


def build_guard_settings(values: Mapping[str, Any]) -> GuardSettings:
    """Every guard's settings: the policy, its margins and intervals."""
    _check_margins(values, "margin")
    _check_margins(values, "soft_margin")
    return GuardSettings(
        policy=Policy(values["policy"]),
        dry_run=values["dry_run"],
        margin_ratio=values["margin_ratio"],
        min_margin_bytes=values["min_margin"],
        max_margin_bytes=values["max_margin"],
        check_granularity_bytes=check_granularity_bytes(
            os.cpu_count() or 1, os.sysconf("SC_PAGE_SIZE")
        ),
        max_cache_ratio=values["max_cache_ratio"],
        flush_cooldown_s=values["flush_cooldown"],
        cooldown_s=values["cooldown"],
        recheck_interval_s=values["recheck_interval"],
        hot_recheck_interval_s=values["hot_recheck_interval"],
        cache_flush_above=values["flush_cache_above"],
        cache_flush_interval_s=values["flush_interval"],
        soft_margin_ratio=values["soft_margin_ratio"],
        min_soft_margin_bytes=values["min_soft_margin"],
        max_soft_margin_bytes=values["max_soft_margin"],
        grace_period_s=values["grace_period"],
        graceful_via=GracefulVia(values["graceful_via"]),
    )


def build_v2_settings(values: Mapping[str, Any]) -> V2Settings:
    if values["poll_min_interval"] > values["poll_max_interval"]:
        raise ConfigError("--poll-min-interval is longer than --poll-max-interval")
    tripwire = Tripwire(values["high_tripwire"])
    if tripwire is Tripwire.AUTO and values["dry_run"]:
        tripwire = Tripwire.OFF  # a dry run changes nothing in the containers
    return V2Settings(
        signals=values["v2_signals"],
        psi_trigger=values["psi_trigger"],
        poll=PollSettings(
            values["poll_min_interval"],
            values["poll_max_interval"],
            float(values["poll_assumed_rate"]),
        ),
        high_tripwire=tripwire,
    )


def build_swap_settings(values: Mapping[str, Any]) -> SwapSettings | None:
    """--swap-trigger's settings; None when it is off."""
    if not values["swap_trigger"]:
        return None
    if values["sustained_duration"] < values["swap_poll_interval"]:
        raise ConfigError("--sustained-duration is shorter than --swap-poll-interval")
    return SwapSettings(
        io_threshold_pages_s=float(values["swap_io_threshold"]),
        sustained_s=values["sustained_duration"],
        poll_interval_s=values["swap_poll_interval"],
        cooldown_s=values["swap_cooldown"],
    )
