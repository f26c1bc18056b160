"""Memory QoS from pod annotations served by the emulated API server, on fake trees.

The pods on the emulated server carry the uids and container ids of the fake
tree's containers; the agent follows them through its real pod cache (HTTP
list + watch) and writes memory.high / memory.swap.max into the fake v2 files,
or reports them as unsupported on v1. Warnings become Events on the pod.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from typing import Any

from memguard.fake.tree import FakeContainer
from memguard.guarding.agent import Agent
from memguard.kube.connection import Connection
from memguard.kube.features import KubeFeatures, open_kube
from memguard.kube.podcache import PodCache
from memguard.policy.model import MIB
from memguard.policy.qos import CLASS_KEY, QosClass, QosConfig, high_for
from memguard.qos.applier import MemoryQos
from memguard.reports.collect_sink import CollectSink
from memguard.reports.report import Report, ReportKind
from testing.agents import (
    agent_running,
    compose_agent,
    make_config,
    report_matching,
    reported,
    until,
)
from testing.kube.emulator import PODS, KubeEmulator, pod_for
from testing.waits import bounded

NODE = "node-a"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CONFIG = QosConfig(
    {"bronze": QosClass("bronze", Fraction(1, 2)), "silver": QosClass("silver", Fraction(1, 5))},
    frozenset({"memory.high", "memory.swap.max"}),
)


@asynccontextmanager
async def qos_agent(
    root: str, kubeconfig: pathlib.Path | None, dry_run: bool = False
) -> AsyncIterator[tuple[Agent, CollectSink, MemoryQos, KubeFeatures]]:
    features: KubeFeatures | None = await bounded(
        open_kube(Connection(False, str(kubeconfig)), NODE, explicit=True), "the Kubernetes client"
    )
    assert features is not None
    collect = CollectSink()
    config = make_config(root, memory_qos=CONFIG, dry_run=dry_run)
    agent, qos = compose_agent(
        config, [collect, features.sink], [("pod-cache", features.run)], features.cache
    )
    assert qos is not None
    async with agent_running(agent):
        yield agent, collect, qos, features


def setting(container: FakeContainer, file: str) -> str:
    """A fake v2 setting as the kernel would show it ("max" when never written)."""
    path = os.path.join(container.path, file)
    if not os.path.exists(path):
        return "max"
    with open(path) as handle:
        return handle.read().strip()


def class_patch(qos_class: str | None) -> dict[str, Any]:
    """A merge patch setting (or, None, removing) the pod's class annotation."""
    return {"metadata": {"annotations": {"class.memory-qos.nri.io": qos_class}}}


def write(container: FakeContainer, file: str, value: str) -> None:
    with open(os.path.join(container.path, file), "w") as handle:
        handle.write(value)


def is_v2(container: FakeContainer) -> bool:
    return os.path.exists(os.path.join(container.path, "memory.max"))


async def change_class_and_settle(
    kube: KubeEmulator,
    features: KubeFeatures,
    qos: MemoryQos,
    container: FakeContainer,
    qos_class: str,
) -> None:
    """Patch the pod's class; return once memguard's pod cache has it and the QoS
    task has looked at every container the change marked."""
    kube.patch(PODS, "shop", container.name, class_patch(qos_class))

    def changed(cache: PodCache) -> bool:
        pod = cache.lookup(container.ref.pod_uid)
        return pod is not None and pod.annotations.get(CLASS_KEY) == qos_class

    await bounded(
        features.bridge.run(features.cache.wait_until(changed)),
        f"class {qos_class} of {container.name} in the pod cache",
    )
    await until(qos.changes, lambda: qos.settled, "memory QoS settled")


def by_name(containers: list[FakeContainer]) -> dict[str, FakeContainer]:
    return {c.name: c for c in containers}


async def test_classes_and_annotations_are_applied_or_refused(
    kube: KubeEmulator, any_fake_tree: tuple[str, list[FakeContainer]]
) -> None:
    root, containers = any_fake_tree
    named = by_name(containers)
    web, db, batch, api, cache = (named[n] for n in ("web", "db", "batch", "api", "cache"))
    v2 = is_v2(web)
    kube.create_pod(pod_for(web, {"class.memory-qos.nri.io": "silver"}))
    kube.create_pod(
        pod_for(
            db,
            {
                "class.memory-qos.nri.io": "bronze",
                "memory.swap.max.memory-qos.nri.io/app": "0",  # the container's own beats the class
                "memory.high.memory-qos.nri.io/other": "max",  # another container's: ignored
            },
        )
    )
    kube.create_pod(pod_for(batch, {"class.memory-qos.nri.io": "silver"}))  # no limit
    kube.create_pod(pod_for(api, {"class.memory-qos.nri.io": "gold"}))
    kube.create_pod(pod_for(cache, {"memory.oom.group.memory-qos.nri.io": "1"}))
    async with qos_agent(root, kube.kubeconfig) as (agent, collect, _, _features):
        invalid_api = await reported(collect, api.path, ReportKind.QOS_INVALID)
        invalid_cache = await reported(collect, cache.path, ReportKind.QOS_INVALID)
        done: dict[str, Report] = {}
        kind = ReportKind.QOS_APPLIED if v2 else ReportKind.QOS_UNSUPPORTED
        for container in (web, db, batch):
            done[container.name] = await reported(collect, container.path, kind)
        await until(
            agent.bus.changes,
            lambda: agent.bus.handled("kubernetes") >= 5,
            f"{'kubernetes'} handled {5} reports",
        )
    assert "unknown memory QoS class 'gold' (known: bronze, silver)" in invalid_api.reason
    assert "memory.oom.group is not in unifiedannotations" in invalid_cache.reason
    for refused in (api, cache):
        assert setting(refused, "memory.high") == "max"
        assert setting(refused, "memory.swap.max") == "max"
    if v2:
        assert setting(web, "memory.high") == str(high_for(256 * MIB, 0.2, PAGE_BYTES))
        assert setting(web, "memory.swap.max") == "max"
        assert setting(db, "memory.high") == str(high_for(384 * MIB, 0.5, PAGE_BYTES))
        assert setting(db, "memory.swap.max") == "0"
        assert setting(batch, "memory.high") == "max"  # no limit: nothing to take a share of
        assert "no memory limit" in done["batch"].reason
        assert "80% of the limit" in done["web"].reason
    else:
        assert "cgroup v1 has no equivalent of memory.high, memory.swap.max" in done["web"].reason
        assert "(class silver)" in done["web"].reason
        assert setting(web, "memory.high") == "max"  # nothing written
    events = {e["regarding"]["name"]: e for e in kube.events()}
    assert events["api"]["type"] == "Warning"
    assert events["api"]["reason"] == "OomGuardMemoryQoSInvalid"
    assert events["api"]["regarding"]["fieldPath"] == "spec.containers{app}"
    assert events["cache"]["reason"] == "OomGuardMemoryQoSInvalid"
    expected = (
        ("Normal", "OomGuardMemoryQoS") if v2 else ("Warning", "OomGuardMemoryQoSUnsupported")
    )
    assert (events["web"]["type"], events["web"]["reason"]) == expected
    assert kube.rejections == []


async def test_annotation_and_limit_changes_are_followed_and_undone(
    kube: KubeEmulator, fake_v2_tree: tuple[str, list[FakeContainer]]
) -> None:
    root, containers = fake_v2_tree
    web = by_name(containers)["web"]
    kube.create_pod(pod_for(web, {"class.memory-qos.nri.io": "silver"}))
    async with qos_agent(root, kube.kubeconfig) as (agent, collect, _, _features):
        await reported(collect, web.path, ReportKind.QOS_APPLIED)
        # The class changes: the plugin never looks again, memguard does.
        kube.patch(PODS, "shop", "web", class_patch("bronze"))
        # The limit changes (an in-place resize): memory.high follows it.
        write(web, "memory.max", str(512 * MIB))
        guards = agent.supervisor.guards
        await until(
            agent.supervisor.changes,
            lambda: (guards[web.path].armed_threshold_bytes or 0) > 256 * MIB,
            "the guard re-armed for the new limit",
        )
        want = str(high_for(512 * MIB, 0.5, PAGE_BYTES))
        await report_matching(
            collect,
            lambda r: r.cgroup == web.path and f"memory.high={want}" in r.reason,
            f"memory.high={want} reported for the resized web container",
        )
        assert setting(web, "memory.high") == want
        # The class goes: memguard puts back what it found.
        kube.patch(PODS, "shop", "web", class_patch(None))
        await report_matching(
            collect,
            lambda r: r.cgroup == web.path and "put back" in r.reason,
            "web's memory QoS put back once its class went",
        )
        assert setting(web, "memory.high") == "max"
        assert setting(web, "memory.swap.max") == "max"


async def test_v1_says_unsupported_once_per_pod(
    kube: KubeEmulator, fake_tree: tuple[str, list[FakeContainer]]
) -> None:
    root, containers = fake_tree
    web = by_name(containers)["web"]
    kube.create_pod(pod_for(web, {"class.memory-qos.nri.io": "silver"}))
    async with qos_agent(root, kube.kubeconfig) as (_, collect, qos, features):
        await reported(collect, web.path, ReportKind.QOS_UNSUPPORTED)
        await change_class_and_settle(kube, features, qos, web, "bronze")
    unsupported = [r for r in collect.reports if r.kind is ReportKind.QOS_UNSUPPORTED]
    assert len(unsupported) == 1
    assert "(class silver)" in unsupported[0].reason
    assert setting(web, "memory.high") == "max"  # nothing written


async def test_dry_run_says_what_it_would_set_and_writes_nothing(
    kube: KubeEmulator, fake_v2_tree: tuple[str, list[FakeContainer]]
) -> None:
    root, containers = fake_v2_tree
    web = by_name(containers)["web"]
    kube.create_pod(pod_for(web, {"class.memory-qos.nri.io": "silver"}))
    async with qos_agent(root, kube.kubeconfig, dry_run=True) as (_, collect, qos, features):
        report = await reported(collect, web.path, ReportKind.QOS_APPLIED)
        await change_class_and_settle(kube, features, qos, web, "bronze")
    assert report.action == "would set memory QoS"
    assert report.dry_run
    assert setting(web, "memory.high") == "max"
    assert setting(web, "memory.swap.max") == "max"
    would = [r.reason for r in collect.reports if r.kind is ReportKind.QOS_APPLIED]
    assert len(would) == 2  # silver, then bronze: each said once
    assert "class bronze" in would[1]
