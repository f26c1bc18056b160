"""`memguard demo`: the agent on a fake tree, driven to a flush, a skip and a kill.

Everything is real except the kernel: real files watched with inotify, real
sleeping processes, real SIGKILLs through pidfds. It runs in a temporary
directory, removes it afterwards and exits 0 when all three decisions were seen.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable

import trio

from memguard.cli.compose import select_backend
from memguard.cli.logsetup import configure
from memguard.fake import scenario, tree
from memguard.guarding.agent import Agent, AgentConfig
from memguard.policy.model import GuardSettings, Policy, check_granularity_bytes
from memguard.reports.bus import ReportBus
from memguard.reports.collect_sink import CollectSink
from memguard.reports.log_sink import LogSink
from memguard.reports.report import Report, ReportKind

REPORT_WAIT_S = 5.0
EXPECTED = {
    "flush": ReportKind.FLUSH,
    "skip": ReportKind.SKIP,
    "kill": ReportKind.KILL_PROCESS,
}


def _settings() -> GuardSettings:
    return GuardSettings(
        policy=Policy.PROCESS,
        check_granularity_bytes=check_granularity_bytes(
            os.cpu_count() or 1, os.sysconf("SC_PAGE_SIZE")
        ),
    )


async def _run_phases(
    root: str,
    containers: list[tree.FakeContainer],
    collect: CollectSink,
    say: Callable[[str], None],
) -> list[tuple[str, Report | None]]:
    by_name = {c.name: c for c in containers}
    seen: list[tuple[str, Report | None]] = []
    for phase in scenario.PHASES:
        container = by_name[phase.container]
        await scenario.run_phase(root, container, phase, say)
        expected = EXPECTED[phase.name]
        report: Report | None = None
        with trio.move_on_after(REPORT_WAIT_S):
            report = await collect.wait_for_kind(container.path, expected)
        say(f"[{phase.name}] memguard decided: {report.kind.value if report else 'NOTHING'}")
        seen.append((phase.name, report))
    return seen


async def run_demo(say: Callable[[str], None] = print, cgroup_version: int = 1) -> int:
    root = tempfile.mkdtemp(prefix="memguard-demo-")
    containers = tree.build(root, cgroup_version=cgroup_version)
    pids = [pid for c in containers for pid in c.pids]
    say(f"fake kubepods tree in {root}: {len(containers)} containers, {len(pids)} real processes")
    collect = CollectSink()
    bus = ReportBus([LogSink(), collect])
    agent = Agent(AgentConfig(parent=root, settings=_settings()), select_backend(root), bus)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            seen = await _run_phases(root, containers, collect, say)
            agent.stop()
    finally:
        tree.kill_and_reap(pids)
        shutil.rmtree(root, ignore_errors=True)
    say("summary:")
    for name, report in seen:
        say(f"  {name:<6} {report.message() if report else 'no decision seen'}")
    return 0 if all(report is not None for _, report in seen) else 1


def main(cgroup_version: int = 1) -> int:
    configure("text", "info", sys.stdout)

    def say(line: str) -> None:
        print(line, file=sys.stdout, flush=True)

    return trio.run(run_demo, say, cgroup_version)
