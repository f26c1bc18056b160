"""The graceful and evict policies, annotations and protection end to end: the agent
composed as `memguard run` composes it with Kubernetes on (memguard.cli.compose:
the pod cache, PodOverrides, ApiPodActions, the Event sink; plus a collecting
sink) against the emulated API server, on a fake tree whose container is a real
sleeping process of a pod the emulator holds."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from memguard.cli.compose import build_agent, open_kube_from, pods_side, select_backend
from memguard.cli.config import RunConfig, build_run_config
from memguard.cli.options import RUN_OPTIONS, resolve
from memguard.fake import drive, model, tree
from memguard.guarding.agent import Agent
from memguard.kube.features import KubeFeatures
from memguard.kube.pods import bare_container_id
from memguard.policy.model import MIB
from memguard.reports.bus import ReportBus, Sink
from memguard.reports.collect_sink import CollectSink
from memguard.reports.log_sink import LogSink
from memguard.reports.report import ReportKind
from testing.agentproc import reaped
from testing.agents import agent_running, reported, until, wait_armed
from testing.kube.emulator import PDBS, PODS, KubeEmulator, container_id, make_pdb, make_pod
from testing.waits import bounded, within

NODE = "node-a"
LIMIT = 256 * MIB
BETWEEN_SOFT_AND_HARD = 240 * MIB  # soft 230.4 MiB (10 %), hard 250.9 MiB (2 %)
OVER_HARD = 252 * MIB
LAST_CHANCE = 255 * MIB  # the evict policy's escalation level
GLOBAL_THRESHOLD = LIMIT - int(0.02 * LIMIT)  # --margin-ratio 0.02


def run_config(root: str, kube: KubeEmulator, **flags: str) -> RunConfig:
    """`memguard run --parent root --kubeconfig ... --node-name node-a` plus flags
    (by option dest: policy="evict", graceful_via="evict" ...)."""
    given = {
        "parent": root,
        "kubeconfig": str(kube.kubeconfig),
        "node_name": NODE,
        "status_socket": "off",
        **flags,
    }
    return build_run_config(resolve(RUN_OPTIONS, given, {}))


@asynccontextmanager
async def kube_agent(config: RunConfig) -> AsyncIterator[tuple[Agent, CollectSink, KubeFeatures]]:
    """The agent as memguard.cli.compose.compose builds it with Kubernetes on (without
    the HTTP endpoint and status socket), a CollectSink first among its sinks."""
    backend = select_backend(config.agent.parent, config.cgroup_version, config.v2, config.hold)
    kube = await bounded(open_kube_from(config), "the Kubernetes client")
    assert kube is not None
    collect = CollectSink()
    sinks: list[Sink] = [collect, LogSink(), kube.sink]
    bus = ReportBus(sinks, config.report_queue)
    overrides, pod_actions = pods_side(config, kube, bus)
    services = [("pod-cache", kube.run)]
    agent, _ = build_agent(
        config, backend, sinks, services, kube.cache, overrides, pod_actions, bus
    )
    async with agent_running(agent):
        yield agent, collect, kube


def shop_pod(uid: str, namespace: str = "shop", name: str = "web-0", **spec: Any) -> dict[str, Any]:
    pod = make_pod(namespace, name, uid=uid, node_name=NODE, containers=("app",))
    pod["spec"].update(spec)
    return pod


async def pod_known(kube: KubeFeatures, uid: str) -> None:
    cache = kube.cache
    await bounded(
        kube.bridge.run(cache.wait_until(lambda c: c.lookup(uid) is not None)),
        f"pod {uid} in the pod cache",
    )


def make_container(root: str, uid: str, pid: int) -> str:
    """The fake cgroup of container app of pod uid (burstable, cgroupfs driver)."""
    cid = bare_container_id(container_id(uid, "app"))
    path = os.path.join(root, "kubepods", "burstable", f"pod{uid}", cid)
    memory = model.FakeMemory(limit_bytes=LIMIT, pids=[pid], anon_by_pid={pid: MIB})
    memory.version = model.tree_cgroup_version(root)
    model.create(path, memory)
    return path


def fill_to(root: str, path: str, usage_bytes: int) -> None:
    memory = model.read(path)
    assert memory is not None
    result = drive.step(root, path, drive.Kind.ANON, usage_bytes - memory.usage_bytes)
    assert result is not None
    assert result.usage_bytes == usage_bytes


def alive(pid: int) -> bool:
    """True unless pid is our child that has exited (reaping it)."""
    found, _ = os.waitpid(pid, os.WNOHANG)
    return found == 0


async def killed_by(pid: int, signum: int) -> bool:
    status = await reaped(pid, f"pid {pid} exited")
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signum


async def emulator_until(what: str, condition: Callable[[], bool]) -> None:
    """Park until condition() holds of the emulator's state (another thread's server:
    polled), bounded."""
    with within(what):
        while not condition():  # noqa: ASYNC110 - the emulator's state, another thread
            await trio.sleep(0.01)


async def events_posted(agent: Agent) -> None:
    """Every report published so far has been handled by the Event sink."""
    bus = agent.bus
    await until(
        bus.changes,
        lambda: bus.handled("kubernetes") == bus.published,
        "the Event sink handled every report",
    )


def pod_events(kube: KubeEmulator, uid: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.events() if e["reason"] == reason and e["regarding"].get("uid") == uid]


async def test_graceful_via_evict_evicts_with_the_pods_grace_period(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    root = empty_fake_root
    uid = "1b2c3d4e-0000-4000-8000-00000000e001"
    kube.create_pod(shop_pod(uid, terminationGracePeriodSeconds=45))
    pid = tree.spawn_sleeper()
    try:
        config = run_config(root, kube, policy="graceful", graceful_via="evict")
        async with kube_agent(config) as (agent, collect, features):
            await pod_known(features, uid)
            path = make_container(root, uid, pid)
            await wait_armed(agent, path)
            fill_to(root, path, BETWEEN_SOFT_AND_HARD)
            await emulator_until("the pod evicted", lambda: bool(kube.removals()))
            assert alive(pid)  # evicted, not signalled: that is the kubelet's part
            os.kill(pid, signal.SIGTERM)  # the kubelet stopping the evicted pod's container
            report = await reported(collect, path, ReportKind.EVICT)
            await events_posted(agent)
        [removal] = kube.removals()
        assert (removal.how, removal.namespace, removal.name) == ("evict", "shop", "web-0")
        assert removal.grace_period_s == 45  # the pod's terminationGracePeriodSeconds
        assert removal.uid_precondition == uid
        assert removal.status == 201
        assert report.action.startswith("evicted pod: the container exited")
        assert "evict done" in report.reason
        assert not [r for r in collect.reports if r.kind is ReportKind.KILL_CONTAINER]
        [event] = pod_events(kube, uid, "OomGuardEvict")
        assert event["regarding"]["name"] == "web-0"
        assert event["regarding"]["namespace"] == "shop"
        assert kube.rejections == []
    finally:
        tree.kill_and_reap([pid])


async def test_evict_refused_by_a_budget_is_asked_again_and_escalates_at_last_chance(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    root = empty_fake_root
    uid = "1b2c3d4e-0000-4000-8000-00000000e002"
    kube.create_pod(shop_pod(uid))
    kube.create(PDBS, make_pdb("shop", "web-budget", {"app": "web-0"}, disruptions_allowed=0))
    pid = tree.spawn_sleeper()
    try:
        config = run_config(root, kube, policy="evict")
        async with kube_agent(config) as (agent, collect, features):
            await pod_known(features, uid)
            path = make_container(root, uid, pid)
            await wait_armed(agent, path)
            fill_to(root, path, OVER_HARD)
            await emulator_until("the eviction asked twice", lambda: len(kube.removals()) >= 2)
            assert alive(pid)  # refused: nothing killed yet
            fill_to(root, path, LAST_CHANCE)
            report = await reported(collect, path, ReportKind.KILL_CONTAINER)
            await events_posted(agent)
        removals = kube.removals()
        assert {(r.how, r.name, r.status) for r in removals} == {("evict", "web-0", 429)}
        assert removals[0].grace_period_s == 30  # no --grace-period, none on the pod
        assert report.reason.startswith("escalated: usage reached the last-chance level")
        assert "evict refused" in report.reason
        assert "429" in report.reason
        assert [v.pid for v in report.victims] == [pid]
        assert await killed_by(pid, signal.SIGKILL)
        assert not [r for r in collect.reports if r.kind is ReportKind.EVICT]
        [event] = pod_events(kube, uid, "OomGuardKillContainer")
        assert "escalated" in event["note"]
        assert kube.rejections == []
    finally:
        tree.kill_and_reap([pid])


async def test_evict_allowed_by_a_budget_is_reported_when_the_container_exits(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    root = empty_fake_root
    uid = "1b2c3d4e-0000-4000-8000-00000000e003"
    kube.create_pod(shop_pod(uid))
    kube.create(PDBS, make_pdb("shop", "web-budget", {"app": "web-0"}, disruptions_allowed=1))
    pid = tree.spawn_sleeper()
    try:
        config = run_config(root, kube, policy="evict", grace_period="20s")
        async with kube_agent(config) as (agent, collect, features):
            await pod_known(features, uid)
            path = make_container(root, uid, pid)
            await wait_armed(agent, path)
            fill_to(root, path, OVER_HARD)
            await emulator_until("the pod evicted", lambda: bool(kube.removals()))
            assert alive(pid)
            os.kill(pid, signal.SIGTERM)  # the kubelet stopping the evicted pod's container
            report = await reported(collect, path, ReportKind.EVICT)
            await events_posted(agent)
        [removal] = kube.removals()
        assert (removal.how, removal.status, removal.grace_period_s) == ("evict", 201, 20)
        [budget] = kube.objects(PDBS)
        assert budget["status"]["disruptionsAllowed"] == 0  # the eviction used it
        assert report.action.startswith("evicted pod: the container exited")
        assert not [r for r in collect.reports if r.kind is ReportKind.KILL_CONTAINER]
        assert len(pod_events(kube, uid, "OomGuardEvict")) == 1
        assert kube.rejections == []
    finally:
        tree.kill_and_reap([pid])


def annotate(kube: KubeEmulator, name: str, **annotations: str) -> None:
    kube.patch(PODS, "shop", name, {"metadata": {"annotations": annotations}})


async def test_a_changed_annotation_rearms_and_a_bad_one_is_one_warning(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    root = empty_fake_root
    uid = "1b2c3d4e-0000-4000-8000-00000000e004"
    kube.create_pod(shop_pod(uid))
    pid = tree.spawn_sleeper()
    try:
        async with kube_agent(run_config(root, kube)) as (agent, collect, features):
            await pod_known(features, uid)
            path = make_container(root, uid, pid)
            await wait_armed(agent, path)
            guard = agent.supervisor.guards[path]
            assert guard.armed_threshold_bytes == GLOBAL_THRESHOLD

            async def armed_at(threshold_bytes: int, what: str) -> None:
                await until(
                    agent.supervisor.changes,
                    lambda: guard.armed_threshold_bytes == threshold_bytes,
                    f"re-armed at {threshold_bytes} ({what})",
                )

            annotate(kube, "web-0", **{"memguard.io/margin": "30%"})
            await armed_at(LIMIT - int(0.3 * LIMIT), "memguard.io/margin 30%")
            annotate(kube, "web-0", **{"memguard.io/margin": "lots"})
            await armed_at(GLOBAL_THRESHOLD, "a bad margin: the global one")
            # Another change of the pod (the container's own key wins): re-armed, the
            # bad pod-level value still there and not said again.
            annotate(kube, "web-0", **{"margin.memguard.io/app": "64Mi"})
            await armed_at(LIMIT - 64 * MIB, "margin.memguard.io/app 64Mi")
            await events_posted(agent)
        bad = [r for r in collect.reports if r.kind is ReportKind.BAD_ANNOTATION]
        assert len(bad) == 1
        assert "memguard.io/margin" in bad[0].reason
        [event] = pod_events(kube, uid, "OomGuardBadAnnotation")
        assert event["type"] == "Warning"
        assert event["regarding"]["name"] == "web-0"
        assert "lots" in event["note"]
        assert "series" not in event  # posted once, not a repeat aggregated into it
        assert alive(pid)  # re-arming touched nothing
        assert kube.rejections == []
    finally:
        tree.kill_and_reap([pid])


@pytest.mark.parametrize("policy", ["container", "evict", "graceful"])
async def test_a_pod_in_kube_system_is_reported_protected_and_left_alone(
    kube: KubeEmulator, empty_fake_root: str, policy: str
) -> None:
    root = empty_fake_root
    uid = "1b2c3d4e-0000-4000-8000-00000000e005"
    kube.create_pod(shop_pod(uid, namespace="kube-system", name="coredns-0"))
    pid = tree.spawn_sleeper()
    try:
        config = run_config(root, kube, policy=policy, graceful_via="evict")
        async with kube_agent(config) as (agent, collect, features):
            await pod_known(features, uid)
            path = make_container(root, uid, pid)
            await wait_armed(agent, path)
            fill_to(root, path, OVER_HARD)
            report = await reported(collect, path, ReportKind.PROTECTED)
            await events_posted(agent)
            assert alive(pid)
        assert "namespace kube-system is protected (--protected-namespaces)" in report.action
        assert not [r for r in collect.reports if r.victims]
        assert kube.removals() == []
        [event] = pod_events(kube, uid, "OomGuardProtected")
        assert event["regarding"]["namespace"] == "kube-system"
        assert alive(pid)  # still, after the agent stopped
        assert kube.rejections == []
    finally:
        tree.kill_and_reap([pid])


async def test_a_pod_the_cache_learns_of_after_the_guard_armed_is_protected(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    """The cgroup is there before its pod reaches the cache (as at a node's start):
    the guard takes the pod's overrides and protection when the pod comes."""
    root = empty_fake_root
    uid = "1b2c3d4e-0000-4000-8000-00000000e006"
    pid = tree.spawn_sleeper()
    try:
        async with kube_agent(run_config(root, kube)) as (agent, collect, _):
            path = make_container(root, uid, pid)
            await wait_armed(agent, path)
            guard = agent.supervisor.guards[path]
            assert guard.armed_threshold_bytes == GLOBAL_THRESHOLD
            pod = shop_pod(uid, namespace="kube-system", name="coredns-1")
            pod["metadata"]["annotations"] = {"memguard.io/margin": "30%"}
            kube.create_pod(pod)
            await until(
                agent.supervisor.changes,
                lambda: guard.armed_threshold_bytes == LIMIT - int(0.3 * LIMIT),
                "re-armed with the pod's margin",
            )
            fill_to(root, path, OVER_HARD)
            report = await reported(collect, path, ReportKind.PROTECTED)
            assert alive(pid)
        assert "namespace kube-system is protected" in report.action
        assert not [r for r in collect.reports if r.victims]
    finally:
        tree.kill_and_reap([pid])


async def test_graceful_via_delete_deletes_with_the_annotated_grace_period(
    kube: KubeEmulator, empty_fake_root: str
) -> None:
    """memguard.io/grace-period beats the pod's terminationGracePeriodSeconds; the
    API server marks the pod terminating (deletionGracePeriodSeconds)."""
    root = empty_fake_root
    uid = "1b2c3d4e-0000-4000-8000-00000000e007"
    pod = shop_pod(uid, terminationGracePeriodSeconds=45)
    pod["metadata"]["annotations"] = {"memguard.io/grace-period": "12s"}
    kube.create_pod(pod)
    pid = tree.spawn_sleeper()
    try:
        config = run_config(root, kube, policy="graceful", graceful_via="delete")
        async with kube_agent(config) as (agent, collect, features):
            await pod_known(features, uid)
            path = make_container(root, uid, pid)
            await wait_armed(agent, path)
            fill_to(root, path, BETWEEN_SOFT_AND_HARD)
            await emulator_until("the pod deleted", lambda: bool(kube.removals()))
            assert alive(pid)
            os.kill(pid, signal.SIGTERM)  # the kubelet stopping the deleted pod's container
            report = await reported(collect, path, ReportKind.DELETE)
            await events_posted(agent)
        [removal] = kube.removals()
        assert (removal.how, removal.name, removal.grace_period_s) == ("delete", "web-0", 12)
        assert removal.uid_precondition == uid
        [stored] = kube.objects(PODS)
        assert stored["metadata"]["deletionGracePeriodSeconds"] == 12
        assert report.action.startswith("deleted pod: the container exited")
        assert not [r for r in collect.reports if r.kind is ReportKind.KILL_CONTAINER]
        assert len(pod_events(kube, uid, "OomGuardDelete")) == 1
        assert kube.rejections == []
    finally:
        tree.kill_and_reap([pid])
