"""The graceful policy on real cgroups (issue 13): SIGTERM at the soft level to a
process that shuts down cleanly; one that ignores SIGTERM escalated to SIGKILL at
the hard threshold, and one that stays between soft and hard until the grace
period is over - the kernel's OOM killer never acts (oom_kill 0). How fast and
how often it ends gracefully is measured in bench/graceful.py, not here."""

from __future__ import annotations

import os
import pathlib
import signal
import sys

import pytest

from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agents import make_config, reported, running_agent, wait_armed
from testing.cgroups import CgroupTree, Started

pytestmark = pytest.mark.kernel
WORKLOADS = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "testing", "workloads.py")
)
LIMIT_BYTES = 256 * MIB
KILLED = -signal.SIGKILL


def on_sigterm(
    cgroups: CgroupTree, cgroup: str, mode: str, marker: pathlib.Path, mib: int, rate: float
) -> Started:
    argv = [sys.executable, WORKLOADS, "on-sigterm", mode, str(marker), str(mib), str(rate)]
    return cgroups.spawn(cgroup, argv, name=f"the on-sigterm {mode} workload")


async def test_a_clean_shutdown_at_the_soft_level(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    """200 MiB/s into 256 MiB: SIGTERM at the soft level (230.4 MiB), the handler
    writes its marker and exits before the hard threshold."""
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    marker = tmp_path / "marker"
    app = on_sigterm(cgroups, cgroup, "exit", marker, 512, 200)
    async with running_agent(make_config(cgroups.parent, policy=Policy.GRACEFUL)) as (
        agent,
        collect,
    ):
        await wait_armed(agent, cgroup)
        app.go()
        report = await reported(collect, cgroup, ReportKind.TERMINATE)
        assert await app.exited() == 0
    assert marker.read_text() == "clean shutdown\n"
    assert report.action.startswith("terminated: the container exited")
    assert [(v.pid, v.killed) for v in report.victims] == [(app.pid, True)]
    assert report.latency_s is not None
    assert report.usage_bytes < report.threshold_bytes  # type: ignore[operator]
    assert not [r for r in collect.reports if r.kind is ReportKind.KILL_CONTAINER]
    assert cgroups.oom_kills(cgroup) == 0


async def test_sigterm_ignored_is_escalated_at_the_hard_threshold(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    marker = tmp_path / "marker"
    app = on_sigterm(cgroups, cgroup, "ignore", marker, 512, 200)
    async with running_agent(make_config(cgroups.parent, policy=Policy.GRACEFUL)) as (
        agent,
        collect,
    ):
        await wait_armed(agent, cgroup)
        app.go()
        report = await reported(collect, cgroup, ReportKind.KILL_CONTAINER)
        assert await app.exited() == KILLED
    assert report.reason.startswith("escalated: usage reached the hard threshold"), report.reason
    assert f"SIGTERM to {app.pid}/" in report.reason
    assert marker.read_text() == "sigterm ignored\n"  # it had its SIGTERM first
    assert [v.pid for v in report.victims] == [app.pid]
    assert cgroups.oom_kills(cgroup) == 0


async def test_a_grace_period_that_runs_out_escalates(
    cgroups: CgroupTree, tmp_path: pathlib.Path
) -> None:
    """A slow allocator that stops between soft (230.4 MiB) and hard (250.9 MiB)."""
    cgroup = cgroups.container(limit_bytes=LIMIT_BYTES)
    marker = tmp_path / "marker"
    app = on_sigterm(cgroups, cgroup, "ignore", marker, 232, 100)
    config = make_config(cgroups.parent, policy=Policy.GRACEFUL, grace_period_s=1.0)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, cgroup)
        app.go()
        report = await reported(collect, cgroup, ReportKind.KILL_CONTAINER)
        assert await app.exited() == KILLED
    assert report.reason.startswith("escalated: the grace period of 1s is over"), report.reason
    assert marker.read_text() == "sigterm ignored\n"
    assert cgroups.oom_kills(cgroup) == 0
