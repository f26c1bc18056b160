"""Shared test helpers: settings, a running agent, process and fd accounting."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from memguard.backends.base import Backend
from memguard.guarding.agent import Agent, AgentConfig
from memguard.guarding.discovery import MatchMode
from memguard.guarding.supervisor import GuardSupervisor
from memguard.policy.model import GuardSettings, check_granularity_bytes
from memguard.reports.bus import Sink
from memguard.reports.collect_sink import CollectSink


def make_settings(**overrides: Any) -> GuardSettings:
    base = GuardSettings(
        check_granularity_bytes=check_granularity_bytes(
            os.cpu_count() or 1, os.sysconf("SC_PAGE_SIZE")
        )
    )
    return dataclasses.replace(base, **overrides)


def make_config(parent: str, **overrides: Any) -> AgentConfig:
    match = overrides.pop("match", MatchMode.CONTAINERS)
    agent_fields = {f.name for f in dataclasses.fields(AgentConfig)}
    agent_overrides = {k: overrides.pop(k) for k in list(overrides) if k in agent_fields}
    return AgentConfig(
        parent=parent, settings=make_settings(**overrides), match=match, **agent_overrides
    )


@asynccontextmanager
async def running_agent(
    config: AgentConfig, sinks: Sequence[Sink] = (), backend: Backend | None = None
) -> AsyncIterator[tuple[Agent, CollectSink]]:
    """An agent running in a nursery; stopped (and drained) on exit."""
    collect = CollectSink()
    agent = Agent(config, [collect, *sinks], backend=backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        try:
            yield agent, collect
        finally:
            agent.stop()


def supervisor_of(agent: Agent) -> GuardSupervisor:
    assert agent.supervisor is not None
    return agent.supervisor


async def wait_armed(agent: Agent, cgroup: str) -> None:
    """Park until the guard of cgroup has registered its threshold."""
    await supervisor_of(agent).wait_for(lambda s: cgroup in s.guards and s.guards[cgroup].armed)


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def trio_task_count() -> int:
    """Every task in the current trio run (root included)."""
    count = 0
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
