"""Agents for tests and benchmarks: settings, a running agent, process and fd accounting."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from memguard.backends.base import Backend, NamedService
from memguard.cli.compose import build_agent, select_backend
from memguard.cli.config import RunConfig
from memguard.components import Changes
from memguard.guarding.agent import Agent, AgentConfig
from memguard.guarding.pods import OverridesSource, PodActions
from memguard.policy.model import GuardSettings, check_granularity_bytes
from memguard.qos.applier import MemoryQos, PodSource
from memguard.reports.bus import Sink
from memguard.reports.collect_sink import CollectSink
from memguard.reports.report import Report, ReportKind
from testing.waits import WAIT_S, late, within


def make_settings(**overrides: Any) -> GuardSettings:
    base = GuardSettings(
        check_granularity_bytes=check_granularity_bytes(
            os.cpu_count() or 1, os.sysconf("SC_PAGE_SIZE")
        )
    )
    return dataclasses.replace(base, **overrides)


def make_config(parent: str, **overrides: Any) -> RunConfig:
    """A RunConfig for parent: keyword arguments go to RunConfig (v2, memory_qos,
    report_queue ...), AgentConfig (match, shutdown_drain_s ...) or GuardSettings
    (policy, dry_run ...), whichever has the field."""
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"agent"}
    agent_fields = {f.name for f in dataclasses.fields(AgentConfig)} - {"settings", "parent"}
    run_overrides = {k: overrides.pop(k) for k in list(overrides) if k in run_fields}
    agent_overrides = {k: overrides.pop(k) for k in list(overrides) if k in agent_fields}
    agent = AgentConfig(parent=parent, settings=make_settings(**overrides), **agent_overrides)
    return RunConfig(agent=agent, **run_overrides)


def compose_agent(
    config: RunConfig,
    sinks: Sequence[Sink],
    services: Sequence[NamedService] = (),
    pods: PodSource | None = None,
    backend: Backend | None = None,
    overrides: OverridesSource | None = None,
    pod_actions: PodActions | None = None,
) -> tuple[Agent, MemoryQos | None]:
    """The agent (and its memory QoS, if configured) as memguard.cli.compose builds it;
    the backend is chosen from the parent's filesystem unless given."""
    if backend is None:
        backend = select_backend(
            config.agent.parent, config.cgroup_version, config.v2, config.hold, config.layout
        )
    return build_agent(config, backend, sinks, services, pods, overrides, pod_actions)


@asynccontextmanager
async def running_agent(
    config: RunConfig,
    sinks: Sequence[Sink] = (),
    backend: Backend | None = None,
    services: Sequence[NamedService] = (),
    pods: PodSource | None = None,
    overrides: OverridesSource | None = None,
    pod_actions: PodActions | None = None,
) -> AsyncIterator[tuple[Agent, CollectSink]]:
    """An agent composed as `memguard run` composes it (memguard.cli.compose), running
    in a nursery; stopped (and drained) on exit. The backend is chosen from the
    parent's filesystem unless given."""
    collect = CollectSink()
    agent, _ = compose_agent(
        config, [collect, *sinks], services, pods, backend, overrides, pod_actions
    )
    async with agent_running(agent):
        yield agent, collect


@asynccontextmanager
async def agent_running(agent: Agent, timeout_s: float = WAIT_S) -> AsyncIterator[Agent]:
    """agent.run in a nursery until the block ends, then agent.stop(); its start (first
    discovery done) and its end (reports drained) are bounded waits."""
    parent = agent.config.parent
    with trio.CancelScope() as stopping:
        async with trio.open_nursery() as nursery:
            with within(f"the agent on {parent} started", timeout_s):
                await nursery.start(agent.run)
            try:
                yield agent
            finally:
                agent.stop()
                stopping.deadline = trio.current_time() + timeout_s
    if stopping.cancelled_caught:
        raise late(f"the agent on {parent} stopped", timeout_s)


async def until(
    changes: Changes, condition: Callable[[], bool], message: str, timeout_s: float = WAIT_S
) -> None:
    """Park until condition() holds (checked after every change); fail with message."""
    with within(message, timeout_s):
        await changes.until(condition)


async def reported(
    collect: CollectSink, cgroup: str, kind: ReportKind, timeout_s: float = WAIT_S
) -> Report:
    """The first report of kind about cgroup (CollectSink.wait_for_kind), bounded: the
    failure lists the last reports that did come."""
    with trio.move_on_after(timeout_s):
        return await collect.wait_for_kind(cgroup, kind)
    raise late(f"{kind.value} about {cgroup} ({_last_reports(collect)})", timeout_s)


async def report_matching(
    collect: CollectSink, predicate: Callable[[Report], bool], what: str, timeout_s: float = WAIT_S
) -> Report:
    """The first report matching predicate (CollectSink.wait_for), bounded."""
    with trio.move_on_after(timeout_s):
        return await collect.wait_for(predicate)
    raise late(f"{what} ({_last_reports(collect)})", timeout_s)


def _last_reports(collect: CollectSink, count: int = 5) -> str:
    if not collect.reports:
        return "no report came"
    last = [f"{r.kind.value} about {r.cgroup}" for r in collect.reports[-count:]]
    return f"{len(collect.reports)} reports came, the last: {'; '.join(last)}"


async def wait_guarded(agent: Agent, count: int, timeout_s: float = WAIT_S) -> None:
    """Park until exactly count cgroups are guarded by exactly count live guard tasks."""
    supervisor = agent.supervisor
    await until(
        supervisor.changes,
        lambda: len(supervisor.guarded) == count and supervisor.running == count,
        f"{count} guards running (have {len(supervisor.guarded)} guarded)",
        timeout_s,
    )


async def wait_armed(agent: Agent, cgroup: str, timeout_s: float = WAIT_S) -> None:
    """Park until the guard of cgroup has registered its threshold."""
    guards = agent.supervisor.guards
    await until(
        agent.supervisor.changes,
        lambda: cgroup in guards and guards[cgroup].armed,
        f"the guard of {cgroup} armed",
        timeout_s,
    )


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
