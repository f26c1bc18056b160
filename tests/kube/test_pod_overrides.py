"""Containers' overrides from the pod cache (memguard.kube.overrides) against the
emulated API server: annotations and protection, re-arm calls, bad-annotation Events."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from memguard.kube.connection import Connection
from memguard.kube.features import KubeFeatures, open_kube
from memguard.kube.overrides import PodOverrides, own_pod_uid
from memguard.kube.pods import bare_container_id
from memguard.policy.annotations import Protection
from memguard.policy.model import Policy
from memguard.policy.overrides import NO_OVERRIDES
from memguard.policy.paths import ContainerRef
from memguard.reports.bus import ReportBus
from memguard.reports.collect_sink import CollectSink
from memguard.reports.report import ReportKind
from testing.kube.emulator import PODS, KubeEmulator, container_id, make_pod
from testing.waits import bounded, within

NODE = "node-a"
BAD = ReportKind.BAD_ANNOTATION.value
DEFAULTS = Protection()


@asynccontextmanager
async def overrides_running(
    kubeconfig: pathlib.Path | None, protection: Protection = DEFAULTS, own: str | None = None
) -> AsyncIterator[tuple[PodOverrides, trio.MemoryReceiveChannel[str | None], KubeFeatures]]:
    """PodOverrides over a running pod cache, its reports going to the Event sink
    through a report bus; yields the channel of the uids its listener was called with."""
    connection = Connection(False, str(kubeconfig))
    features = await bounded(open_kube(connection, NODE, explicit=True), "the Kubernetes client")
    assert features is not None
    bus = ReportBus([features.sink, CollectSink()])
    source = PodOverrides(features.cache, protection, bus.publish, own)
    send, receive = trio.open_memory_channel[str | None](100)
    token = trio.lowlevel.current_trio_token()
    source.subscribe(lambda uid: token.run_sync_soon(send.send_nowait, uid))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        with within("the pod cache started"):
            await nursery.start(features.run)
        try:
            yield source, receive, features
        finally:
            source.close()
            nursery.cancel_scope.cancel()


def pod(name: str, namespace: str = "shop", **annotations: str) -> tuple[dict[str, Any], str]:
    uid = str(uuid.uuid4())
    obj = make_pod(namespace, name, uid=uid, node_name=NODE, containers=("app", "side"))
    obj["metadata"]["annotations"] = annotations
    return obj, uid


def ref(uid: str, container: str = "app") -> ContainerRef:
    return ContainerRef(uid, bare_container_id(container_id(uid, container)), None, None, "x")


async def next_uid(receive: trio.MemoryReceiveChannel[str | None]) -> str | None:
    return await bounded(receive.receive(), "a call of the overrides listener")


def bad_annotation_events(kube: KubeEmulator) -> list[dict[str, Any]]:
    return [e for e in kube.events() if e["reason"] == BAD]


async def events_count(kube: KubeEmulator, count: int) -> list[dict[str, Any]]:
    with within(f"{count} {BAD} Events"):
        while len(found := bad_annotation_events(kube)) < count:  # noqa: ASYNC110
            await trio.sleep(0.01)  # the Events are on another thread's server: polled
    return found


async def test_annotations_reach_the_container_and_a_change_calls_the_listener(
    kube: KubeEmulator,
) -> None:
    web, web_uid = pod("web", **{"memguard.io/policy": "noop"})
    other, other_uid = pod("other")
    kube.create_pod(web)
    kube.create_pod(other)
    async with overrides_running(kube.kubeconfig) as (source, receive, _):
        first = {await next_uid(receive), await next_uid(receive)}
        assert first == {web_uid, other_uid}  # each pod, when the cache first holds it
        assert source.overrides(ref(web_uid)).policy is Policy.NOOP
        assert source.overrides(ref(other_uid)) == NO_OVERRIDES
        assert source.overrides(ref("not-a-cached-pod")) == NO_OVERRIDES
        # a change of labels is not a change of overrides: no call for it, and the
        # next call is the annotation change made after it
        kube.patch(PODS, "shop", "web", {"metadata": {"labels": {"tier": "front"}}})
        patch = {"metadata": {"annotations": {"policy.memguard.io/app": "process"}}}
        kube.patch(PODS, "shop", "other", patch)
        assert await next_uid(receive) == other_uid
        assert source.overrides(ref(other_uid)).policy is Policy.PROCESS
        assert source.overrides(ref(other_uid, "side")).policy is None  # app's key only
        kube.patch(PODS, "shop", "web", {"metadata": {"annotations": {"memguard.io/policy": None}}})
        assert await next_uid(receive) == web_uid
        assert source.overrides(ref(web_uid)) == NO_OVERRIDES
        kube.delete(PODS, "shop", "web")
        assert await next_uid(receive) == web_uid
        assert source.overrides(ref(web_uid)) == NO_OVERRIDES


async def test_a_bad_annotation_posts_one_warning_per_pod_and_problem(kube: KubeEmulator) -> None:
    bad = {"memguard.io/policy": "kill", "margin.memguard.io/app": "lots"}
    web, web_uid = pod("web", **bad)
    kube.create_pod(web)
    async with overrides_running(kube.kubeconfig) as (source, receive, _):
        assert await next_uid(receive) == web_uid
        assert source.overrides(ref(web_uid)) == NO_OVERRIDES  # the flags apply
        first = await events_count(kube, 2)
        # a change that keeps both bad values: nothing said again; then a new problem
        patch = {"metadata": {"annotations": {"memguard.io/grace-period": "30s"}}}
        kube.patch(PODS, "shop", "web", patch)
        assert await next_uid(receive) == web_uid
        assert source.overrides(ref(web_uid)).grace_period_s == 30.0
        kube.patch(PODS, "shop", "web", {"metadata": {"annotations": {"memguard.io/ignore": "?"}}})
        assert await next_uid(receive) == web_uid
        events = await events_count(kube, 3)
        assert source.problems_reported == 3
    assert events[:2] == first
    notes = "\n".join(e["note"] for e in events)
    assert all(e["type"] == "Warning" for e in events)
    assert all(e["regarding"]["name"] == "web" and e["regarding"]["kind"] == "Pod" for e in events)
    assert "pod shop/web: memguard.io annotation not used; annotation " in notes
    assert "memguard.io/ignore: '?' is not true or false" in notes
    assert "memguard.io/policy: 'kill' is not a policy" in notes
    assert "margin.memguard.io/app: 'lots' is not a size" in notes
    [scoped] = [e for e in events if "margin.memguard.io/app" in e["note"]]
    assert scoped["regarding"]["fieldPath"] == "spec.containers{app}"
    assert all("series" not in e for e in events)  # none of them said twice
    assert kube.rejections == []


async def test_protection_kube_system_critical_and_own_pod(kube: KubeEmulator) -> None:
    system, system_uid = pod("coredns", "kube-system", **{"memguard.io/policy": "process"})
    critical, critical_uid = pod("critical")
    critical["spec"]["priority"] = 2_000_001_000
    mine, mine_uid = pod("oom-guard")
    for obj in (system, critical, mine):
        kube.create_pod(obj)
    async with overrides_running(kube.kubeconfig, own=mine_uid) as (source, receive, _):
        assert len({await next_uid(receive) for _ in range(3)}) == 3
        coredns = source.overrides(ref(system_uid))
        assert coredns.protected == "namespace kube-system is protected (--protected-namespaces)"
        assert coredns.policy is Policy.PROCESS  # read, but it never lifts protection
        assert "--act-on-critical" in (source.overrides(ref(critical_uid)).protected or "")
        assert source.overrides(ref(mine_uid)).protected == "memguard's own pod"
        assert source.overrides(ref(mine_uid, "side")).protected == "memguard's own pod"
    open_settings = Protection(frozenset(), act_on_critical=True)
    async with overrides_running(kube.kubeconfig, open_settings) as (source, receive, _):
        assert len({await next_uid(receive) for _ in range(3)}) == 3
        assert source.overrides(ref(system_uid)).protected is None
        assert source.overrides(ref(critical_uid)).protected is None
        assert source.overrides(ref(mine_uid)).protected is None  # not told it is its own


def test_own_pod_uid_from_the_downward_api_or_the_cgroup(tmp_path: pathlib.Path) -> None:
    uid = "0d7c5d3e-1c2b-4a5f-9e8d-7c6b5a4f3e2d"
    assert own_pod_uid({"POD_UID": uid}, str(tmp_path / "none")) == uid
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(f"12:memory:/kubepods/burstable/pod{uid}/{'a' * 64}\n0::/\n")
    assert own_pod_uid({}, str(cgroup)) == uid
    cgroup.write_text("0::/\n")  # a private cgroup namespace: unknown
    assert own_pod_uid({}, str(cgroup)) is None
    assert own_pod_uid({}, str(tmp_path / "none")) is None
