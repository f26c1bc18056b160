"""The race against the kernel's OOM killer, on real cgroups (issue 11).

Each test runs a workload that beat memguard before: a fast hog with some page
cache, a container of 300 processes, a fork bomb, and (v1) a hog while
memguard is stopped, with --hold-at-limit. Each checks who won: the kernel's
oom_kill count stays 0 and memguard's report says what it did. How often
memguard wins at which fill rate is measured in bench/race.py, not here.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest
import trio

from memguard.backends.hold import LOCK_FILE, HoldSettings
from memguard.kernel import cgroup_v1, cgroupfs, names
from memguard.kernel.procfs import PAGE_BYTES
from memguard.policy.margin import levels as levels_of
from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agentproc import agent_process, wait_until
from testing.agents import make_config, make_settings, reported, running_agent, until, wait_armed
from testing.cgroups import CgroupTree, Started
from testing.waits import WAIT_S, within

pytestmark = pytest.mark.kernel
KILLED = -signal.SIGKILL
WORKLOADS = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "testing", "workloads.py")
)
LIMIT_BYTES = 128 * MIB
USAGE_FILE = {1: names.USAGE_FILE, 2: names.CURRENT_FILE}


def workload(cgroups: CgroupTree, cgroup: str, name: str, *args: object) -> Started:
    argv = [sys.executable, WORKLOADS, name, *map(str, args)]
    return cgroups.spawn(cgroup, argv, name=f"the {name} workload")


async def test_a_fast_hog_with_page_cache_is_killed_without_a_flush_first(
    cgroups: CgroupTree, page_cache_dir: pathlib.Path
) -> None:
    """20 MiB of clean page cache, then anonymous memory as fast as this CPU
    touches it: a flush could not finish before the limit, so memguard kills."""
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    hog = workload(cgroups, cgroup, "cache-then-anon", 20, page_cache_dir, 256)
    config = make_config(cgroups.parent, policy=Policy.CONTAINER)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, cgroup)
        hog.go()
        kill = await reported(collect, cgroup, ReportKind.KILL_CONTAINER)
        assert await hog.exited() == KILLED
    ours = [report for report in collect.reports if report.cgroup == cgroup]
    before_kill = ours[: [report.kind for report in ours].index(ReportKind.KILL_CONTAINER)]
    flushes = [report for report in before_kill if report.kind is ReportKind.FLUSH]
    if cgroups.version == 1:
        assert flushes == []
    else:  # the v2 tier's emulated CPU (QEMU TCG) fills many times slower: a flush
        # can be in time there, and then it brought usage back under the threshold
        for flush in flushes:
            assert flush.usage_after_bytes is not None
            assert flush.threshold_bytes is not None
            assert flush.usage_after_bytes < flush.threshold_bytes, flush
    assert [victim.pid for victim in kill.victims] == [hog.pid]
    assert cgroups.oom_kills(cgroup) == 0


async def test_a_container_of_300_processes_is_killed_whole(cgroups: CgroupTree) -> None:
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    many = workload(cgroups, cgroup, "many", 300, 256, 100)
    config = make_config(cgroups.parent, policy=Policy.CONTAINER)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, cgroup)
        many.go()
        kill = await reported(collect, cgroup, ReportKind.KILL_CONTAINER)
        assert await many.exited() == KILLED
    if cgroups.version == 1:
        assert len(kill.victims) == 301
    else:  # cgroup.kill signals all at once; the report names those it saw
        assert kill.extra.get("cgroup_kill") == "true", kill.extra
    assert kill.survivors == 0
    assert "signalled_within_ms" in kill.extra
    assert kill.extra.get("realtime") == "true", kill.extra  # root: SCHED_FIFO permitted
    assert cgroups.pids_in(cgroup) == []
    assert cgroups.oom_kills(cgroup) == 0


async def test_a_fork_bomb_is_frozen_and_killed(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    """A container that starts forking after memguard prepared its victims: the
    kill finds members the preparation did not know, so on v1 it also freezes
    the freezer mirror (as the kubelet and runc make one), kills every member and
    thaws; v2 has cgroup.kill. v1 holds at the limit (--hold-at-limit), v2 has
    the memory.high tripwire: the kernel's OOM killer never gets its turn."""
    cgroup = cgroups.container(limit_bytes=1024 * MIB)
    if cgroups.version == 1:
        cgroups.freezer_mirror(cgroup)
    argv = [sys.executable, WORKLOADS, "fill-then-forkbomb", "100", "4", "0.005"]
    bomb = cgroups.spawn(cgroup, [*argv, "8"], stdout=subprocess.PIPE, name="the fork bomb")
    hold = HoldSettings(at_limit=cgroups.version == 1, ledger_dir=str(tmp_path / "held"))
    config = make_config(cgroups.parent, policy=Policy.CONTAINER, hold=hold)
    async with running_agent(config) as (agent, collect):
        supervisor = agent.supervisor
        await wait_armed(agent, cgroup)
        bomb.go()
        await line_from(bomb, "filled")
        # a limit that puts usage between the warning level and the threshold
        usage = int(cgroups.read(cgroup, USAGE_FILE[cgroups.version]))
        limit = (int(usage / 0.95) // PAGE_BYTES + 1) * PAGE_BYTES
        cgroups.set_limit(cgroup, limit)
        levels = levels_of(limit, make_settings())
        assert levels is not None
        assert levels.warning is not None
        assert levels.warning <= usage < levels.threshold
        await until(
            supervisor.changes,
            lambda: supervisor.guards[cgroup].prepared_victims >= 1,
            "the victims prepared past the warning level",
        )
        bomb.go()  # now it forks
        kill = await reported(collect, cgroup, ReportKind.KILL_CONTAINER)
        assert await bomb.exited() == KILLED
    assert kill.survivors == 0
    if cgroups.version == 1:
        assert len(kill.victims) > 1
    else:  # cgroup.kill: children that died at once are not in the report's list
        assert kill.extra.get("cgroup_kill") == "true", kill.extra
    assert cgroups.pids_in(cgroup) == []
    assert cgroups.oom_kills(cgroup) == 0
    if cgroups.version == 1:
        assert kill.extra.get("froze") == "true", kill.extra


async def line_from(process: Started, expected: str) -> None:
    stdout = process.process.stdout
    assert stdout is not None
    with within(f"{process.name} said {expected!r}", WAIT_S):
        line = await trio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
    assert line.decode().strip() == expected


def records(ledger: pathlib.Path) -> list[str]:
    """The ledger's records (beside them, the lock file of the agent owning it)."""
    return [name for name in os.listdir(ledger) if name != LOCK_FILE]


def _oom_control(cgroup: str) -> dict[str, int]:
    control = cgroup_v1.read_oom_control(cgroup)
    assert control is not None
    return control


@pytest.mark.cgroup_v1_only  # oom_kill_disable
async def test_hold_at_limit_wins_while_memguard_is_stopped(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    """--hold-at-limit: memguard stopped (SIGSTOP) for 2 s while a hog reaches
    the limit; the kernel parks the hog instead of killing it; resumed, memguard
    kills it. On SIGTERM it puts oom_kill_disable back and its ledger is empty."""
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=1000)
    ledger = tmp_path / "held"
    args = ["--parent", cgroups.parent, "--policy", "process"]
    args += ["--hold-at-limit", "--hold-ledger", str(ledger)]
    with agent_process(args, stderr=tmp_path / "memguard.log") as agent:
        await agent.wait_ready()
        await wait_until(
            lambda: _oom_control(cgroup)["oom_kill_disable"] == 1, 30, "the hold is set"
        )
        assert len(records(ledger)) == 1
        agent.process.send_signal(signal.SIGSTOP)
        try:
            hog.go()
            await wait_until(
                lambda: _oom_control(cgroup)["under_oom"] == 1, 30, "the hog is parked"
            )
            await trio.sleep(2)  # the scenario: memguard away for 2 s (not a wait)
            assert hog.process.poll() is None  # parked, not killed
        finally:
            agent.process.send_signal(signal.SIGCONT)
        assert await hog.exited() == KILLED
        assert agent.stop() == 0
    assert cgroups.oom_kills(cgroup) == 0
    assert _oom_control(cgroup)["oom_kill_disable"] == 0
    assert records(ledger) == []
    assert "OomGuardKill" in (tmp_path / "memguard.log").read_text()


@pytest.mark.cgroup_v1_only  # oom_kill_disable
async def test_a_restart_takes_over_a_hold_left_by_a_killed_memguard(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    """memguard SIGKILLed while holding: the hog parks at the limit with no one to
    act; the next memguard (same ledger) finds it parked and kills it."""
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    idle = cgroups.container(limit_bytes=LIMIT_BYTES, index=1)
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=1000)
    ledger = tmp_path / "held"
    args = ["--parent", cgroups.parent, "--policy", "process"]
    args += ["--hold-at-limit", "--hold-ledger", str(ledger)]
    with agent_process(args, stderr=tmp_path / "first.log") as first:
        await first.wait_ready()
        await wait_until(
            lambda: all(_oom_control(c)["oom_kill_disable"] == 1 for c in (cgroup, idle)),
            30,
            "both holds set",
        )
        first.process.kill()
        first.process.wait()
    hog.go()
    await wait_until(lambda: _oom_control(cgroup)["under_oom"] == 1, 30, "the hog is parked")
    without_hold = [a for a in args if a != "--hold-at-limit"]
    with agent_process(without_hold, stderr=tmp_path / "second.log") as second:
        await second.wait_ready()
        # not holding now: the idle cgroup's hold is released at start; the parked
        # one is released too, and the kernel (not memguard) resolves it
        assert _oom_control(idle)["oom_kill_disable"] == 0
        assert second.stop() == 0
    assert await hog.exited() == KILLED
    assert cgroupfs.read_procs(cgroup) == []
    assert cgroups.oom_kills(cgroup) >= 1
    assert records(ledger) == []


@pytest.mark.cgroup_v1_only  # oom_kill_disable
async def test_a_holding_restart_kills_what_a_killed_memguard_left_parked(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=1000)
    ledger = tmp_path / "held"
    args = ["--parent", cgroups.parent, "--policy", "process"]
    args += ["--hold-at-limit", "--hold-ledger", str(ledger)]
    with agent_process(args, stderr=tmp_path / "first.log") as first:
        await first.wait_ready()
        await wait_until(
            lambda: _oom_control(cgroup)["oom_kill_disable"] == 1, 30, "the hold is set"
        )
        first.process.kill()
        first.process.wait()
    hog.go()
    await wait_until(lambda: _oom_control(cgroup)["under_oom"] == 1, 30, "the hog is parked")
    with agent_process(args, stderr=tmp_path / "second.log") as second:
        assert await hog.exited() == KILLED
        assert second.stop() == 0
    assert cgroups.oom_kills(cgroup) == 0
    assert _oom_control(cgroup)["oom_kill_disable"] == 0
    assert records(ledger) == []
