"""The kill path with pidfds refused, against the real kernel: what memguard does
under an older container runtime's RuntimeDefault seccomp profile. The refusal
is injected at the cffi boundary (testing.pidfd_refusal); cgroups, processes,
cgroup.procs and the kills are real."""

from __future__ import annotations

import errno
import os
import signal

import pytest
import trio

from memguard.kernel import names
from memguard.kernel.pidfd import PIDFD_OPEN, PlainPid
from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agents import compose_agent, make_config, reported, running_agent, wait_armed
from testing.cgroups import CgroupTree, Started
from testing.pidfd_refusal import OPEN, pidfds_refused

pytestmark = pytest.mark.kernel
KILLED = -signal.SIGKILL
KIND = {Policy.PROCESS: ReportKind.KILL_PROCESS, Policy.CONTAINER: ReportKind.KILL_CONTAINER}


@pytest.mark.parametrize("policy", [Policy.PROCESS, Policy.CONTAINER])
async def test_a_fast_hog_is_killed_by_pid_when_pidfd_open_is_refused(
    cgroups: CgroupTree, policy: Policy
) -> None:
    cgroup = cgroups.container(limit_bytes=128 * MIB)
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=100)
    with pidfds_refused({OPEN: errno.EPERM}) as refusing:
        async with running_agent(make_config(cgroups.parent, policy=policy)) as (agent, collect):
            assert agent.killer.pidfds.refused == {PIDFD_OPEN: errno.EPERM}  # the probe
            await wait_armed(agent, cgroup)
            hog.go()
            report = await reported(collect, cgroup, KIND[policy])
    assert refusing.calls == {OPEN: 1}  # the probe's: no pidfd was opened afterwards
    assert await hog.exited() == KILLED
    assert [v.pid for v in report.victims if v.killed] == [hog.pid]
    assert cgroups.oom_kills(cgroup) == 0


def sleeper(cgroups: CgroupTree, cgroup: str, oom_score_adj: int) -> Started:
    """A real process in cgroup (parked reading stdin), ranked by oom_score_adj."""
    started = cgroups.spawn(cgroup, ["sleep", "600"])
    with open(f"/proc/{started.pid}/oom_score_adj", "w") as file:
        file.write(str(oom_score_adj))
    return started


def move(pid: int, cgroup: str) -> None:
    with open(os.path.join(cgroup, names.PROCS_FILE), "w") as file:
        file.write(str(pid))


@pytest.mark.parametrize("policy", [Policy.PROCESS, Policy.CONTAINER])
async def test_a_prepared_pid_that_left_the_cgroup_is_not_signalled(
    cgroups: CgroupTree, policy: Policy
) -> None:
    """Victims prepared by pid (no probe: the first pidfd_open decides); the best
    ranked then moves to another cgroup - as a pid that exited and was reused
    elsewhere would - and only the member still in cgroup.procs is killed."""
    cgroup = cgroups.container(limit_bytes=128 * MIB)
    elsewhere = cgroups.container(limit_bytes=128 * MIB, index=1)
    stranger, member = sleeper(cgroups, cgroup, 1000), sleeper(cgroups, cgroup, 500)
    agent, _ = compose_agent(make_config(cgroups.parent, policy=policy), [])
    killer = agent.killer
    with pidfds_refused({OPEN: errno.EPERM}):
        prepared = killer.prepare(cgroup)
        assert prepared is not None
        assert list(prepared.victims) == [stranger.pid, member.pid]
        assert all(isinstance(p, PlainPid) for p in prepared.victims.values())
        move(stranger.pid, elsewhere)
        if policy is Policy.PROCESS:
            outcome = await killer.kill_process(cgroup, prepared)
        else:
            outcome = await killer.kill_container(cgroup, prepared, trio.current_time() + 10)
    assert killer.pidfds.refused == {PIDFD_OPEN: errno.EPERM}
    assert member.pid in [v.pid for v in outcome.victims if v.killed]
    assert await member.exited() == KILLED
    assert stranger.process.poll() is None  # never signalled
    assert cgroups.pids_in(elsewhere) == [stranger.pid]
    stranger.process.kill()  # the test's own: reaped through its Popen
    assert await stranger.exited() == KILLED
