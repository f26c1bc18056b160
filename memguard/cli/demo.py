"""`memguard demo`: the agent on a fake tree, driven to a flush, a skip and a kill.

Everything is real except the kernel: real files watched with inotify, real
sleeping processes, real SIGKILLs through pidfds. It runs in a temporary
directory, removes it afterwards and exits 0 when all three decisions were seen.

Stopped by a signal (SIGINT, SIGTERM, SIGHUP, SIGQUIT: memguard.cli.signals,
installed before anything is made), it says so in one line, cancels the run,
kills and reaps the tree's processes, removes the tree and exits 128 + the
signal's number (130 for Ctrl-C), the shell's code for a death by that signal.
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
from memguard.cli.signals import Signals
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
STOPPING = "stopping the demo, removing its tree and processes"

Seen = list[tuple[str, Report | None]]


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
) -> Seen:
    by_name = {c.name: c for c in containers}
    seen: Seen = []
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


async def _guard_and_drive(
    root: str, containers: list[tree.FakeContainer], say: Callable[[str], None]
) -> Seen:
    collect = CollectSink()
    bus = ReportBus([LogSink(), collect])
    agent = Agent(AgentConfig(parent=root, settings=_settings()), select_backend(root), bus)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        seen = await _run_phases(root, containers, collect, say)
        agent.stop()
    return seen


async def run_demo(
    say: Callable[[str], None] = print, cgroup_version: int = 1, signals: Signals | None = None
) -> int:
    """The demo's exit code: 0 when all three decisions were seen, 1 when not,
    128 + the signal's number when a stop signal ended it (signals: installed by
    the caller; None: no signal handling of its own)."""
    signals = signals or Signals(stopping=STOPPING)
    root = tempfile.mkdtemp(prefix="memguard-demo-")
    pids: list[int] = []
    seen: Seen = []
    try:
        with trio.CancelScope() as run, signals.attached(run.cancel):
            await trio.lowlevel.checkpoint()  # a stop before the run: nothing is built
            containers = tree.build(root, cgroup_version=cgroup_version)
            pids = [pid for c in containers for pid in c.pids]
            count = f"{len(containers)} containers, {len(pids)} real processes"
            say(f"fake kubepods tree in {root}: {count}")
            seen = await _guard_and_drive(root, containers, say)
    finally:
        tree.kill_and_reap(pids)
        shutil.rmtree(root, ignore_errors=True)
    if signals.stop_signal is not None:
        return signals.exit_code
    say("summary:")
    for name, report in seen:
        say(f"  {name:<6} {report.message() if report else 'no decision seen'}")
    return 0 if all(report is not None for _, report in seen) else 1


def main(cgroup_version: int = 1) -> int:
    signals = Signals(stopping=STOPPING).install()  # before the tree exists
    log_handler = configure("text", "info", sys.stdout)

    def say(line: str) -> None:
        print(line, file=sys.stdout, flush=True)

    try:
        return trio.run(run_demo, say, cgroup_version, signals)
    finally:
        signals.deliver()  # what arrived after the run
        log_handler.close()
        signals.close()  # the process's end: a late signal cannot change its exit code
