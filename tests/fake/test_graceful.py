"""The graceful and evict policies against real processes in a fake tree: SIGTERM
at the soft level and the exit reported; escalation to the container kill when
SIGTERM is ignored (grace period over) or usage reaches the hard threshold;
evictions refused or impossible; dry run; a pod's overrides (protected, ignore)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
from dataclasses import dataclass, field

import pytest
import trio

from memguard.fake import drive, model, tree
from memguard.guarding.pods import PodListener, PodOutcome, PodResult
from memguard.policy.model import MIB, GracefulVia, Policy
from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides, MarginOverride
from memguard.policy.paths import ContainerRef
from memguard.reports.report import ReportKind
from testing.agentproc import reaped
from testing.agents import make_config, reported, running_agent, until, wait_armed
from testing.waits import WAIT_S, within

LIMIT = 256 * MIB
BETWEEN_SOFT_AND_HARD = 240 * MIB  # soft 230.4 MiB, hard 250.9 MiB (2 % margin)
OVER_HARD = 252 * MIB
CONTAINER = "kubepods/burstable/pod1b2c3d4e-0000-4000-8000-000000000001/" + "a" * 64


def _container(root: str, pid: int) -> str:
    path = os.path.join(root, CONTAINER)
    memory = model.FakeMemory(limit_bytes=LIMIT, pids=[pid], anon_by_pid={pid: MIB})
    memory.version = model.tree_cgroup_version(root)
    model.create(path, memory)
    return path


def _fill_to(root: str, path: str, usage_bytes: int) -> None:
    memory = model.read(path)
    assert memory is not None
    result = drive.step(root, path, drive.Kind.ANON, usage_bytes - memory.usage_bytes)
    assert result is not None
    assert result.usage_bytes == usage_bytes


def _stubborn(marker: pathlib.Path) -> subprocess.Popen[bytes]:
    """A process that survives SIGTERM: its handler notes it in marker and goes on."""
    script = f'trap "echo sigterm >> {marker}" TERM; while :; do sleep 0.05; done'
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def _alive(pid: int) -> bool:
    """True unless pid is our child that has exited (reaping it)."""
    found, _ = os.waitpid(pid, os.WNOHANG)
    return found == 0


async def _killed_by(pid: int, signum: int) -> bool:
    status = await reaped(pid, f"pid {pid} exited")
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signum


async def test_sigterm_at_the_soft_level_and_the_exit_reported(empty_fake_root: str) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()  # sleep(1) dies of SIGTERM
    try:
        config = make_config(root, policy=Policy.GRACEFUL)
        async with running_agent(config) as (agent, collect):
            path = _container(root, pid)
            await wait_armed(agent, path)
            _fill_to(root, path, BETWEEN_SOFT_AND_HARD)
            report = await reported(collect, path, ReportKind.TERMINATE)
        assert await _killed_by(pid, signal.SIGTERM)
        assert report.action.startswith("terminated: the container exited after")
        assert f"SIGTERM to {pid}/sleep" in report.reason
        assert [(v.pid, v.killed) for v in report.victims] == [(pid, True)]
        assert report.policy == "graceful"
        assert not [r for r in collect.reports if r.kind is ReportKind.KILL_CONTAINER]
    finally:
        tree.kill_and_reap([pid])


async def test_sigterm_ignored_until_the_grace_period_is_over_escalates(
    empty_fake_root: str, tmp_path: pathlib.Path
) -> None:
    root = empty_fake_root
    marker = tmp_path / "marker"
    stubborn = _stubborn(marker)
    try:
        config = make_config(root, policy=Policy.GRACEFUL, grace_period_s=0.5)
        async with running_agent(config) as (agent, collect):
            path = _container(root, stubborn.pid)
            await wait_armed(agent, path)
            _fill_to(root, path, BETWEEN_SOFT_AND_HARD)
            report = await reported(collect, path, ReportKind.KILL_CONTAINER)
        assert report.reason.startswith("escalated: the grace period of 0.5s is over")
        assert [v.pid for v in report.victims] == [stubborn.pid]
        assert await _killed_by(stubborn.pid, signal.SIGKILL)
        assert marker.read_text().startswith("sigterm")  # it had its SIGTERM first
    finally:
        stubborn.kill()
        stubborn.wait()


async def test_usage_at_the_hard_threshold_after_the_sigterm_escalates(
    empty_fake_root: str, tmp_path: pathlib.Path
) -> None:
    root = empty_fake_root
    marker = tmp_path / "marker"
    stubborn = _stubborn(marker)
    try:
        config = make_config(root, policy=Policy.GRACEFUL)  # 30 s of grace
        async with running_agent(config) as (agent, collect):
            path = _container(root, stubborn.pid)
            await wait_armed(agent, path)
            _fill_to(root, path, BETWEEN_SOFT_AND_HARD)
            with within("the SIGTERM handler ran"):
                while not marker.exists():  # noqa: ASYNC110 - another process's file
                    await trio.sleep(0.01)
            _fill_to(root, path, OVER_HARD)
            report = await reported(collect, path, ReportKind.KILL_CONTAINER)
        assert report.reason.startswith("escalated: usage reached the hard threshold")
        assert f"SIGTERM to {stubborn.pid}/sh" in report.reason
        assert await _killed_by(stubborn.pid, signal.SIGKILL)
        assert not [r for r in collect.reports if r.kind is ReportKind.TERMINATE]
    finally:
        stubborn.kill()
        stubborn.wait()


async def test_a_dry_run_says_whom_it_would_terminate(empty_fake_root: str) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    try:
        config = make_config(root, policy=Policy.GRACEFUL, dry_run=True)
        async with running_agent(config) as (agent, collect):
            path = _container(root, pid)
            await wait_armed(agent, path)
            _fill_to(root, path, BETWEEN_SOFT_AND_HARD)
            report = await reported(collect, path, ReportKind.TERMINATE)
            assert report.action == "would terminate (dry run)"
            assert f"would SIGTERM {pid}/sleep" in report.reason
            assert [(v.pid, v.killed) for v in report.victims] == [(pid, False)]
        assert _alive(pid)  # alive
    finally:
        tree.kill_and_reap([pid])


@dataclass
class ScriptedPods:
    """PodActions at memguard's boundary: answers from a script, calls recorded."""

    answers: list[PodResult]
    calls: list[tuple[str, float | None]] = field(default_factory=list)

    async def evict(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        self.calls.append(("evict", grace_period_s))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def delete(self, ref: ContainerRef, grace_period_s: float | None) -> PodResult:
        self.calls.append(("delete", grace_period_s))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_evict_without_kubernetes_is_the_container_kill_at_once(
    empty_fake_root: str,
) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    try:
        async with running_agent(make_config(root, policy=Policy.EVICT)) as (agent, collect):
            path = _container(root, pid)
            await wait_armed(agent, path)
            _fill_to(root, path, OVER_HARD)
            report = await reported(collect, path, ReportKind.KILL_CONTAINER)
        assert report.reason.startswith(
            "escalated: the pod could not be evicted (evict failed: Kubernetes is off"
        )
        assert await _killed_by(pid, signal.SIGKILL)
    finally:
        tree.kill_and_reap([pid])


async def test_a_refused_eviction_is_asked_again_and_escalates_nearer_the_limit(
    empty_fake_root: str,
) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    refused = PodResult(PodOutcome.REFUSED, "429 Cannot evict pod: disruption budget")
    pods = ScriptedPods([refused])
    try:
        config = make_config(root, policy=Policy.EVICT, grace_period_s=7.0)
        async with running_agent(config, pod_actions=pods) as (agent, collect):
            path = _container(root, pid)
            await wait_armed(agent, path)
            _fill_to(root, path, OVER_HARD)
            with within("the eviction asked twice", WAIT_S):
                while len(pods.calls) < 2:  # noqa: ASYNC110 - the guard's own task
                    await trio.sleep(0.05)
            assert _alive(pid)  # refused: not killed yet
            _fill_to(root, path, 255 * MIB)  # the last-chance level
            report = await reported(collect, path, ReportKind.KILL_CONTAINER)
        assert pods.calls[0] == ("evict", 7.0)  # the eviction carries the grace period
        assert report.reason.startswith("escalated: usage reached the last-chance level")
        assert "evict refused" in report.reason
        assert "429" in report.reason
        assert await _killed_by(pid, signal.SIGKILL)
    finally:
        tree.kill_and_reap([pid])


async def test_graceful_via_evict_reports_the_eviction_when_the_container_exits(
    empty_fake_root: str,
) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    pods = ScriptedPods([PodResult(PodOutcome.DONE, "201")])
    try:
        config = make_config(root, policy=Policy.GRACEFUL, graceful_via=GracefulVia.EVICT)
        async with running_agent(config, pod_actions=pods) as (agent, collect):
            path = _container(root, pid)
            await wait_armed(agent, path)
            _fill_to(root, path, BETWEEN_SOFT_AND_HARD)
            with within("the eviction asked"):
                while not pods.calls:  # noqa: ASYNC110 - the guard's own task
                    await trio.sleep(0.01)
            os.kill(pid, signal.SIGTERM)  # what the kubelet does for an evicted pod
            report = await reported(collect, path, ReportKind.EVICT)
        assert pods.calls == [("evict", 30.0)]
        assert report.action.startswith("evicted pod: the container exited")
        assert "evict done" in report.reason
    finally:
        tree.kill_and_reap([pid])


@dataclass
class StaticOverrides:
    """OverridesSource at memguard's boundary: one ContainerOverrides for every
    container, changed by the test (which then calls the listeners)."""

    value: ContainerOverrides = NO_OVERRIDES
    listeners: list[PodListener] = field(default_factory=list)

    def overrides(self, ref: ContainerRef) -> ContainerOverrides:
        return self.value

    def subscribe(self, listener: PodListener) -> None:
        self.listeners.append(listener)

    def unsubscribe(self, listener: PodListener) -> None:
        self.listeners.remove(listener)

    def change(self, value: ContainerOverrides) -> None:
        self.value = value
        for listener in list(self.listeners):
            listener(None)


@pytest.mark.parametrize("policy", [Policy.GRACEFUL, Policy.CONTAINER])
async def test_a_protected_pod_is_reported_and_left_alone(
    empty_fake_root: str, policy: Policy
) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    why = "namespace kube-system is protected (--protected-namespaces)"
    overrides = StaticOverrides(ContainerOverrides(protected=why))
    try:
        async with running_agent(make_config(root, policy=policy), overrides=overrides) as (
            agent,
            collect,
        ):
            path = _container(root, pid)
            await wait_armed(agent, path)
            _fill_to(root, path, OVER_HARD)
            report = await reported(collect, path, ReportKind.PROTECTED)
            assert why in report.action
        assert _alive(pid)  # alive
        assert not [r for r in collect.reports if r.victims]
    finally:
        tree.kill_and_reap([pid])


async def test_an_ignored_container_is_guarded_once_its_pod_changes(empty_fake_root: str) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    overrides = StaticOverrides(ContainerOverrides(ignore=True))
    try:
        config = make_config(root, policy=Policy.CONTAINER)
        async with running_agent(config, overrides=overrides) as (agent, collect):
            path = _container(root, pid)
            await wait_armed(agent, path)  # nothing to arm: counts as armed (ready)
            guard = agent.supervisor.guards[path]
            assert agent.supervisor.guards[path].ignored
            assert guard.armed_threshold_bytes is None
            _fill_to(root, path, OVER_HARD)
            overrides.change(ContainerOverrides(policy=Policy.PROCESS))
            report = await reported(collect, path, ReportKind.KILL_PROCESS)
            assert not agent.supervisor.guards[path].ignored
        assert [r.kind for r in collect.reports if r.victims] == [ReportKind.KILL_PROCESS]
        assert await _killed_by(pid, signal.SIGKILL)
        assert report.policy == "process"  # the pod's policy
    finally:
        tree.kill_and_reap([pid])


async def test_a_pod_change_rearms_with_its_margin(empty_fake_root: str) -> None:
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    overrides = StaticOverrides()
    try:
        async with running_agent(make_config(root), overrides=overrides) as (agent, _):
            path = _container(root, pid)
            await wait_armed(agent, path)
            guard = agent.supervisor.guards[path]
            assert guard.armed_threshold_bytes == LIMIT - int(0.02 * LIMIT)
            overrides.change(ContainerOverrides(margin=MarginOverride(bytes=64 * MIB)))
            await until(
                agent.supervisor.changes,
                lambda: guard.armed_threshold_bytes == LIMIT - 64 * MIB,
                "re-armed at the pod's margin",
            )
    finally:
        tree.kill_and_reap([pid])


async def test_the_swap_triggers_request_takes_the_graceful_path_whatever_the_policy(
    empty_fake_root: str,
) -> None:
    """GuardSupervisor.act_gracefully (the swap trigger's act): SIGTERM though the
    policy is container and usage is far under every level; unknown cgroups: False."""
    root = empty_fake_root
    pid = tree.spawn_sleeper()
    try:
        config = make_config(root, policy=Policy.CONTAINER)
        async with running_agent(config) as (agent, collect):
            path = _container(root, pid)
            await wait_armed(agent, path)
            assert not await agent.supervisor.act_gracefully(path + "-none", "swap trigger: x")
            assert await agent.supervisor.act_gracefully(path, "swap trigger: node swap I/O")
            report = await reported(collect, path, ReportKind.TERMINATE)
        assert await _killed_by(pid, signal.SIGTERM)
        assert report.action.startswith("terminated: the container exited after")
        assert "swap trigger: node swap I/O" in report.reason
        assert f"SIGTERM to {pid}/sleep" in report.reason
        assert not [r for r in collect.reports if r.kind is ReportKind.KILL_CONTAINER]
    finally:
        tree.kill_and_reap([pid])


async def test_the_swap_triggers_request_escalates_only_when_the_grace_period_ends(
    empty_fake_root: str, tmp_path: pathlib.Path
) -> None:
    """A container swapping at its limit: usage over the hard threshold does not
    escalate a pressure request, the grace period does."""
    root = empty_fake_root
    marker = tmp_path / "marker"
    stubborn = _stubborn(marker)
    try:
        config = make_config(root, policy=Policy.NOOP, grace_period_s=0.5)
        async with running_agent(config) as (agent, collect):
            path = _container(root, stubborn.pid)
            await wait_armed(agent, path)
            _fill_to(root, path, OVER_HARD)  # noop: reported, nothing done
            assert await agent.supervisor.act_gracefully(path, "swap trigger: swapping")
            report = await reported(collect, path, ReportKind.KILL_CONTAINER)
        assert report.reason.startswith("escalated: the grace period of 0.5s is over"), report
        assert await _killed_by(stubborn.pid, signal.SIGKILL)
        assert marker.read_text().startswith("sigterm")
    finally:
        stubborn.kill()
        stubborn.wait()
