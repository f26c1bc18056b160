"""memguard against the emulated API server: Events, the pod cache, failures."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from memguard.cli.config import RunConfig
from memguard.fake import drive, tree
from memguard.guarding.agent import Agent
from memguard.kube.connection import Connection
from memguard.kube.features import KubeFeatures, open_kube
from memguard.kube.podcache import PodCache
from memguard.kube.pods import bare_container_id
from memguard.policy.model import MIB, Policy
from memguard.policy.paths import ContainerRef
from memguard.reports.collect_sink import CollectSink
from memguard.reports.report import Report, ReportKind, Victim
from testing.agentproc import reaped
from testing.agents import agent_running, compose_agent, make_config, reported, until, wait_armed
from testing.cgroups import CgroupTree
from testing.kube.emulator import EVENTS_V1, KubeEmulator, container_id, make_pod
from testing.waits import bounded, within

NODE = "node-a"


async def _killed(pid: int) -> bool:
    """Reap our child pid: True if a signal ended it."""
    return os.WIFSIGNALED(await reaped(pid, f"victim {pid} exited"))


async def open_features(kubeconfig: pathlib.Path | None) -> KubeFeatures:
    connection = Connection(False, str(kubeconfig))
    features = await bounded(open_kube(connection, NODE, explicit=True), "the Kubernetes client")
    assert features is not None
    return features


@asynccontextmanager
async def kube_features(kubeconfig: pathlib.Path | None) -> AsyncIterator[KubeFeatures]:
    features = await open_features(kubeconfig)
    async with trio.open_nursery() as nursery:
        with within("the pod cache started"):
            await nursery.start(features.run)
        try:
            yield features
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def agent_with_kube(
    config: RunConfig, kubeconfig: pathlib.Path | None
) -> AsyncIterator[tuple[Agent, CollectSink, KubeFeatures]]:
    features = await open_features(kubeconfig)
    collect = CollectSink()
    agent, _ = compose_agent(
        config, [collect, features.sink], [("pod-cache", features.run)], features.cache
    )
    async with agent_running(agent):
        yield agent, collect, features


async def cache_until(features: KubeFeatures, what: str, ok: Callable[[PodCache], bool]) -> None:
    await bounded(features.bridge.run(features.cache.wait_until(ok)), what)


async def pod_known(features: KubeFeatures, uid: str) -> None:
    await cache_until(features, f"pod {uid} in the pod cache", lambda c: c.lookup(uid) is not None)


def report_for(uid: str, container: str = "app", **changes: Any) -> Report:
    ref = ContainerRef(
        uid, bare_container_id(container_id(uid, container)), "Burstable", "containerd", "cgroupfs"
    )
    fields: dict[str, Any] = {
        "kind": ReportKind.KILL_PROCESS,
        "cgroup": f"/kubepods/burstable/pod{uid}/x",
        "ref": ref,
        "usage_bytes": 126 * MIB,
        "limit_bytes": 128 * MIB,
        "threshold_bytes": 125 * MIB,
        "policy": "process",
        "action": "killed process",
        "victims": (Victim(4242, "java", 1100, 120 * MIB, True),),
    }
    fields.update(changes)
    return Report(**fields)


@pytest.mark.kernel
async def test_a_real_kill_becomes_an_event_regarding_the_pod(
    kube: KubeEmulator, cgroups: CgroupTree
) -> None:
    uid = str(uuid.uuid4())
    kube.create_pod(make_pod("shop", "web-0", uid=uid, node_name=NODE, containers=("app",)))
    cid = bare_container_id(container_id(uid, "app"))
    cgroup = cgroups.container(128 * MIB, pod_uid=uid, container_id=cid)
    hog = cgroups.hog(cgroup, target_mib=256, rate_mib_s=100)
    config = make_config(cgroups.parent, policy=Policy.PROCESS)
    async with agent_with_kube(config, kube.kubeconfig) as (agent, collect, features):
        await pod_known(features, uid)
        await wait_armed(agent, cgroup)
        hog.go()
        with within("memguard killing the hog"):
            await reported(collect, cgroup, ReportKind.KILL_PROCESS)
            await hog.exited()
        await until(
            agent.bus.changes,
            lambda: agent.bus.handled("kubernetes") >= 1,
            f"{'kubernetes'} handled {1} reports",
        )
    [event] = kube.events()
    assert event["reason"] == "OomGuardKillProcess"
    assert event["type"] == "Warning"
    assert event["action"] == "KillProcess"
    assert event["regarding"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "shop",
        "name": "web-0",
        "uid": uid,
        "fieldPath": "spec.containers{app}",
    }
    assert event["metadata"]["namespace"] == "shop"
    assert event["reportingController"] == "memguard.io/memguard"
    assert event["reportingInstance"] == NODE
    assert f"{hog.pid}/python" in event["note"]
    assert kube.rejections == []


async def test_repeats_within_ten_minutes_become_one_series(kube: KubeEmulator) -> None:
    uid = str(uuid.uuid4())
    kube.create_pod(make_pod("shop", "db-0", uid=uid, node_name=NODE))
    async with kube_features(kube.kubeconfig) as features:
        await pod_known(features, uid)
        with within("the Event sink taking 4 reports"):
            for _ in range(3):
                await features.sink.deliver(report_for(uid))
            await features.sink.deliver(report_for(uid, kind=ReportKind.KERNEL_OOM))
    events = kube.events()
    assert sorted(e["reason"] for e in events) == ["CgroupOOM", "OomGuardKillProcess"]
    kill = next(e for e in events if e["reason"] == "OomGuardKillProcess")
    assert kill["series"]["count"] == 3
    history = kube.history(EVENTS_V1, "shop", kill["metadata"]["name"])
    assert [version.get("series", {}).get("count") for version in history] == [None, 2, 3]
    assert features.poster.counts == {"created": 2, "bumped": 2}
    assert kube.rejections == []


async def test_500s_are_retried_and_nothing_is_lost(kube: KubeEmulator) -> None:
    uid = str(uuid.uuid4())
    kube.create_pod(make_pod("shop", "api-0", uid=uid, node_name=NODE, containers=("a", "b")))
    kube.fail("create", EVENTS_V1, times=3)
    async with kube_features(kube.kubeconfig) as features:
        await pod_known(features, uid)
        with within("the Event sink taking 4 reports through 500s"):
            for container in ("a", "b"):
                for kind in (ReportKind.FLUSH, ReportKind.KILL_CONTAINER):
                    await features.sink.deliver(report_for(uid, container, kind=kind))
    assert len(kube.events()) == 4
    assert features.poster.counts == {"created": 4}
    assert features.poster.retries == 3
    flush = next(e for e in kube.events() if e["reason"] == "OomGuardFlush")
    assert flush["type"] == "Normal"


async def test_an_unknown_pod_is_reported_against_the_node(kube: KubeEmulator) -> None:
    async with kube_features(kube.kubeconfig) as features:
        await cache_until(features, "the first pod list", lambda c: c.synced.is_set())
        with within("the Event sink taking a report about an unknown pod"):
            await features.sink.deliver(report_for(str(uuid.uuid4())))
    [event] = kube.events()
    assert event["regarding"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": NODE,
        "uid": NODE,  # as the kubelet's own Node events
    }
    assert event["metadata"]["namespace"] == "default"
    assert kube.rejections == []


async def test_dry_run_events_say_would(kube: KubeEmulator) -> None:
    uid = str(uuid.uuid4())
    kube.create_pod(make_pod("shop", "web-1", uid=uid, node_name=NODE))
    report = report_for(uid, dry_run=True, action="would kill process (dry run)")
    async with kube_features(kube.kubeconfig) as features:
        await pod_known(features, uid)
        with within("the Event sink taking a dry-run report"):
            await features.sink.deliver(report)
    [event] = kube.events()
    assert event["action"] == "WouldKillProcess"
    assert event["note"].startswith("would kill process (dry run)")


async def test_watch_410_relists_and_keeps_following(kube: KubeEmulator) -> None:
    async with kube_features(kube.kubeconfig) as features:
        cache = features.cache
        await cache_until(features, "the first list", lambda c: c.relists == 1)
        kube.expire_watches()
        await cache_until(features, "a list after the 410", lambda c: c.relists == 2)
        uid = str(uuid.uuid4())
        kube.create_pod(make_pod("shop", "late-0", uid=uid, node_name=NODE))
        kube.create_pod(make_pod("shop", "elsewhere-0", node_name="node-b"))
        await pod_known(features, uid)
        pod = cache.lookup(uid)
    assert pod is not None
    assert pod.name == "late-0"
    assert len(cache) == 1  # the other node's pod is not ours


async def test_api_server_down_guards_still_kill_and_drops_are_counted(
    kube: KubeEmulator, fake_tree: tuple[str, list[tree.FakeContainer]]
) -> None:
    root, containers = fake_tree
    targets = [c for c in containers if c.limit_bytes == 256 * MIB]
    kube.stop_server()
    config = make_config(root, policy=Policy.PROCESS, report_queue=1, shutdown_drain_s=0.2)
    victims = []
    async with agent_with_kube(config, kube.kubeconfig) as (agent, collect, _):
        for target in targets:  # one at a time: the collecting sink's queue holds one too
            drive.step(root, target.path, drive.Kind.ANON, 248 * MIB)
            report = await reported(collect, target.path, ReportKind.KILL_PROCESS)
            victims.append(report.victims[0].pid)
        # The Event sink is stuck on the first report: one waits, the rest is dropped.
        assert agent.bus.dropped["kubernetes"] == len(targets) - 2
        assert agent.bus.dropped["collect"] == 0
    assert all([await _killed(pid) for pid in victims])
    assert kube.events() == []
