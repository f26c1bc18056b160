"""Turning resolved `memguard run` options into the one frozen RunConfig.

RunConfig is the whole configuration of `memguard run`; the composition root
(memguard.cli.compose) builds everything from it and hands each part its share
(the agent its AgentConfig, the v2 backend its V2Settings, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memguard.backends.hold import HoldSettings
from memguard.backends.v2 import Tripwire, V2Settings
from memguard.errors import ConfigError
from memguard.guarding.agent import AgentConfig
from memguard.guarding.discovery import MatchMode
from memguard.kernel.mounts import default_parent, read_host
from memguard.policy.model import GuardSettings, Policy, check_granularity_bytes
from memguard.policy.poll import PollSettings
from memguard.policy.qos import QosConfig


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
    priority: str = "auto"  # auto | off (memguard.cli.priority)


def resolve_parent(parent: str, version: str) -> str:
    """--parent auto: the kubelet's tree under this host's memory controller."""
    if parent != "auto":
        return parent
    mode, mounts = read_host()
    return default_parent(mode, mounts, version)


def build_run_config(values: Mapping[str, Any]) -> RunConfig:
    return RunConfig(
        agent=build_agent_config(values),
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
        priority=values["priority"],
    )


def build_agent_config(values: Mapping[str, Any]) -> AgentConfig:
    if values["min_margin"] > values["max_margin"]:
        raise ConfigError(
            f"--min-margin ({values['min_margin']} bytes) is larger than "
            f"--max-margin ({values['max_margin']} bytes)"
        )
    if not 0 < values["margin_ratio"] < 0.5:
        raise ConfigError("--margin-ratio must be above 0 and below 0.5 (50%)")
    settings = GuardSettings(
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
    )
    return AgentConfig(
        parent=resolve_parent(values["parent"], values["cgroup_version"]),
        settings=settings,
        match=MatchMode(values["match"]),
        rescan_interval_s=values["rescan_interval"],
        flush_timeout_s=values["flush_timeout"],
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
