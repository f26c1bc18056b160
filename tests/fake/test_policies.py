"""Policies executed against real processes in a fake tree."""

from __future__ import annotations

import os
import signal

from memguard.fake import drive, model, tree
from memguard.fake.model import FakeMemory
from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agentproc import fake_container, reaped, wait_exit
from testing.agents import make_config, reported, running_agent, wait_armed
from testing.waits import WAIT_S

Tree = tuple[str, list[tree.FakeContainer]]


def _container(fake: Tree, name: str) -> tree.FakeContainer:
    return next(c for c in fake[1] if c.name == name)


def _alive(pid: int) -> bool:
    """True unless pid is our child that has exited (reaping it)."""
    reaped, _ = os.waitpid(pid, os.WNOHANG)
    return reaped == 0


async def _killed_by_sigkill(pid: int) -> bool:
    status = await reaped(pid, f"pid {pid} exited")
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _over_threshold(root: str, container: tree.FakeContainer) -> None:
    """Charge anon memory to the worker up to 252 MiB of the 256 MiB limit."""
    assert container.limit_bytes == 256 * MIB
    result = drive.step(root, container.path, drive.Kind.ANON, 244 * MIB)
    assert result is not None
    assert result.usage_bytes == 252 * MIB


async def test_process_policy_kills_the_worker_only(any_fake_tree: Tree) -> None:
    root, _ = any_fake_tree
    target = _container(any_fake_tree, "cache")
    first, worker = target.pids
    async with running_agent(make_config(root, policy=Policy.PROCESS)) as (_, collect):
        _over_threshold(root, target)
        report = await reported(collect, target.path, ReportKind.KILL_PROCESS)
    assert [v.pid for v in report.victims] == [worker]
    assert report.victims[0].killed
    assert report.ref.pod_uid is not None
    assert report.ref.pod_uid in target.path
    assert await _killed_by_sigkill(worker)
    assert _alive(first)


async def test_container_policy_kills_every_member(any_fake_tree: Tree) -> None:
    root, _ = any_fake_tree
    target = _container(any_fake_tree, "cache")
    async with running_agent(make_config(root, policy=Policy.CONTAINER)) as (_, collect):
        _over_threshold(root, target)
        report = await reported(collect, target.path, ReportKind.KILL_CONTAINER)
    assert sorted(v.pid for v in report.victims) == sorted(target.pids)
    assert report.survivors == 0
    assert all([await _killed_by_sigkill(pid) for pid in target.pids])
    assert report.usage_after_bytes is not None
    assert report.usage_after_bytes < report.usage_bytes


async def test_noop_policy_reports_and_kills_nothing(any_fake_tree: Tree) -> None:
    root, _ = any_fake_tree
    target = _container(any_fake_tree, "cache")
    async with running_agent(make_config(root, policy=Policy.NOOP)) as (_, collect):
        _over_threshold(root, target)
        report = await reported(collect, target.path, ReportKind.NOOP)
    assert report.victims == ()
    assert all(_alive(pid) for pid in target.pids)


async def test_dry_run_names_the_victim_and_kills_nothing(any_fake_tree: Tree) -> None:
    root, _ = any_fake_tree
    target = _container(any_fake_tree, "cache")
    config = make_config(root, policy=Policy.PROCESS, dry_run=True)
    async with running_agent(config) as (_, collect):
        _over_threshold(root, target)
        report = await reported(collect, target.path, ReportKind.KILL_PROCESS)
    assert report.dry_run
    assert "would kill" in report.action
    assert [(v.pid, v.killed) for v in report.victims] == [(target.pids[1], False)]
    assert all(_alive(pid) for pid in target.pids)


async def test_never_kills_memguard_itself_or_pid_1(empty_fake_root: str) -> None:
    sleeper = tree.spawn_sleeper()
    me = os.getpid()
    path = os.path.join(empty_fake_root, "docker", "c" * 64)
    members = [1, me, sleeper]
    memory = FakeMemory(limit_bytes=64 * MIB, pids=members, anon_by_pid={me: 63 * MIB})
    try:
        async with running_agent(make_config(empty_fake_root)) as (_, collect):
            model.create(path, memory)
            report = await reported(collect, path, ReportKind.KILL_CONTAINER)
        assert [v.pid for v in report.victims] == [sleeper]
        assert report.survivors == 2  # pid 1 and memguard (this test process)
        assert await _killed_by_sigkill(sleeper)
    finally:
        tree.kill_and_reap([sleeper])


async def test_kernel_oom_kill_is_reported(any_fake_tree: Tree) -> None:
    root, _ = any_fake_tree
    target = _container(any_fake_tree, "cache")
    async with running_agent(make_config(root, policy=Policy.NOOP)) as (_, collect):
        result = drive.step(root, target.path, drive.Kind.ANON, 300 * MIB)
        assert result is not None
        assert result.kernel_oom_pid == target.pids[1]
        report = await reported(collect, target.path, ReportKind.KERNEL_OOM)
    assert report.oom_kills == 1
    assert await _killed_by_sigkill(target.pids[1])


async def test_a_kill_under_way_when_memguard_stops_is_finished_and_reported(
    empty_fake_root: str,
) -> None:
    """SIGTERM right after the SIGKILL (a DaemonSet rollout): the kill's report is
    not lost with the guard (the kill is shielded from the stop, and bounded)."""
    container = fake_container(empty_fake_root, "docker/" + "e" * 64, 256 * MIB)
    path = container.path
    try:
        async with running_agent(make_config(empty_fake_root)) as (agent, collect):
            await wait_armed(agent, path)
            drive.step(empty_fake_root, path, drive.Kind.ANON, 250 * MIB)
            await wait_exit(container.pid, WAIT_S, "memguard killed the container")
            # the block ends: the agent stops now, the kill may still be in its rounds
        kinds = [report.kind for report in collect.reports if report.cgroup == path]
        assert kinds == [ReportKind.KILL_CONTAINER]
    finally:
        tree.kill_and_reap([container.pid])
