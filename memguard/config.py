"""Turning resolved `memguard run` options into the one frozen AgentConfig."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from memguard.agent import AgentConfig
from memguard.discovery import MatchMode
from memguard.errors import ConfigError
from memguard.policy.model import GuardSettings, Policy, check_granularity_bytes


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
    )
    return AgentConfig(
        parent=values["parent"],
        settings=settings,
        match=MatchMode(values["match"]),
        rescan_interval_s=values["rescan_interval"],
        flush_timeout_s=values["flush_timeout"],
        queue_capacity=values["report_queue"],
    )
