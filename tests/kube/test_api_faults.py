"""Fault matrix, Kubernetes API class: whatever the API server does, guards kill.

The real agent guards real cgroups (v1 here) and talks to the emulated API
server, which fails in one way per test: gone (connection refused), slow
(every request held 10 s), wrong (Events get 500s while the pod watch gets 410
Gone again and again), and the Kubernetes side of memguard itself stuck (its
asyncio loop blocked). In each, a hog is killed by memguard and not by the
kernel, the guards go on (a second container's hog is killed too, later in
the fault), and the failures are counted where they belong.

The Kubernetes timings are shortened (memguard's own classes, built here as
memguard.kube.features.open_kube builds them) so that the time bounds show
within seconds; no test asserts a duration, and every wait is bounded.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from memguard.guarding.agent import Agent
from memguard.kube.bridge import AsyncioBridge
from memguard.kube.client import KubeClient
from memguard.kube.connection import Connection
from memguard.kube.features import KubeFeatures
from memguard.kube.podcache import PodCache
from memguard.kube.pods import bare_container_id
from memguard.kube.sink import EventPoster, KubeEventSink
from memguard.policy.model import MIB, Policy
from memguard.reports.collect_sink import CollectSink
from memguard.reports.report import Report, ReportKind
from testing.agents import agent_running, compose_agent, make_config, reported, until, wait_armed
from testing.cgroups import CgroupTree
from testing.kube.emulator import EVENTS_V1, PODS, KubeEmulator, container_id, make_pod
from testing.waits import bounded, within

pytestmark = pytest.mark.kernel

NODE = "node-a"
KILLED = -signal.SIGKILL
SLOW_S = 10.0


@dataclass
class Node:
    agent: Agent
    collect: CollectSink
    kube: KubeFeatures
    cgroups: CgroupTree
    containers: list[tuple[str, str]]  # (pod uid, container cgroup)


async def open_tuned_kube(kube: KubeEmulator, list_timeout_s: float) -> KubeFeatures:
    bridge = AsyncioBridge("memguard-kubernetes")
    bridge.start()
    try:
        connection = Connection(False, str(kube.kubeconfig))
        client = await bounded(bridge.run(KubeClient.connect(connection)), "the Kubernetes client")
    except BaseException:
        bridge.stop()
        raise
    # memguard's Kubernetes timings, shortened: a pod cache that retries within 0.4 s;
    # Event attempts of 0.5 s, 2 retries, 1 s per Event; 0.2 s of waiting for a pod list.
    cache = PodCache(client, NODE, request_timeout_s=list_timeout_s, backoff_s=(0.1, 0.2, 0.4))
    poster = EventPoster(
        client, NODE, attempt_timeout_s=0.5, retry_backoff_s=(0.05, 0.1), deadline_s=1.0
    )
    sink = KubeEventSink(bridge, poster, cache, NODE, sync_wait_s=0.2, grace_s=0.5)
    return KubeFeatures(bridge, client, cache, poster, sink, NODE)


@asynccontextmanager
async def guarded_node(
    kube: KubeEmulator, cgroups: CgroupTree, list_timeout_s: float = 0.5
) -> AsyncIterator[Node]:
    """Two pods with one 128 MiB container each, guarded by an agent with Events on."""
    containers = []
    for n in range(2):
        uid = str(uuid.uuid4())
        kube.create_pod(make_pod("shop", f"web-{n}", uid=uid, node_name=NODE))
        cid = bare_container_id(container_id(uid, "app"))
        containers.append((uid, cgroups.container(128 * MIB, pod_uid=uid, container_id=cid)))
    features = await open_tuned_kube(kube, list_timeout_s)
    config = make_config(cgroups.parent, policy=Policy.PROCESS, shutdown_drain_s=0.2)
    collect = CollectSink()
    agent, _ = compose_agent(
        config, [collect, features.sink], [("pod-cache", features.run)], features.cache
    )
    async with agent_running(agent):
        with within("both guards armed"):
            for _, cgroup in containers:
                await wait_armed(agent, cgroup)
        yield Node(agent, collect, features, cgroups, containers)
    # No fault ended a guard or the pod cache's component.
    assert agent.supervisor.failures == 0
    failures = agent.status.failures  # components: the pod cache, each sink, discovery, ...
    assert {"pod-cache", "sink:kubernetes"} <= set(failures)
    assert not any(failures.values()), failures


async def kill_a_hog(node: Node, index: int) -> Report:
    """A hog in container `index` is killed by memguard, not by the kernel."""
    cgroup = node.containers[index][1]
    hog = node.cgroups.hog(cgroup, target_mib=256, rate_mib_s=100)
    hog.go()
    with within(f"memguard killing the hog in container {index}"):
        report = await reported(node.collect, cgroup, ReportKind.KILL_PROCESS)
        assert await hog.exited() == KILLED
    assert [victim.pid for victim in report.victims] == [hog.pid]
    assert report.latency_s is not None
    assert node.cgroups.oom_kills(cgroup) == 0
    return report


async def events_handled(node: Node, count: int) -> None:
    with within(f"the Event sink handling {count} reports"):
        await until(
            node.agent.bus.changes,
            lambda: node.agent.bus.handled("kubernetes") >= count,
            f"{'kubernetes'} handled {count} reports",
        )


async def cache_reaches(node: Node, what: str, ok: Callable[[PodCache], bool]) -> None:
    with within(what):
        await node.kube.bridge.run(node.kube.cache.wait_until(ok))


async def test_api_server_outage(kube: KubeEmulator, cgroups: CgroupTree) -> None:
    kube.stop_server()  # connection refused, from the start
    async with guarded_node(kube, cgroups) as node:
        await kill_a_hog(node, 0)
        await events_handled(node, 1)
        assert node.kube.poster.counts == {"failed": 1}
        assert node.kube.poster.retries == 2
        await cache_reaches(node, "pod cache errors", lambda c: c.errors >= 2)
        assert not node.kube.cache.synced.is_set()
        # The server comes back: the same pod cache (its loop never ended) catches up.
        kube.start_server()
        uid = node.containers[1][0]
        await cache_reaches(node, "the pod cache syncing", lambda c: c.lookup(uid) is not None)
        await kill_a_hog(node, 1)
        await events_handled(node, 2)
        assert node.kube.poster.counts["created"] == 1
    [event] = kube.events()
    assert event["regarding"]["uid"] == uid
    assert node.agent.bus.failed["kubernetes"] == 0  # the poster counted; the sink never raised


async def test_slow_api_server(kube: KubeEmulator, cgroups: CgroupTree) -> None:
    everything = (("create", EVENTS_V1), ("update", EVENTS_V1), ("list", PODS), ("watch", PODS))
    kube.slow(SLOW_S, *everything)
    # The pod cache waits out its first list (held SLOW_S from the agent's start, then its
    # watch is): so the server holds at least one request all through the test.
    async with guarded_node(kube, cgroups, list_timeout_s=3 * SLOW_S) as node:
        await kill_a_hog(node, 0)
        assert kube.stalled() >= 1  # killed while the API server held requests
        await events_handled(node, 1)
        assert node.kube.poster.counts["timed_out"] == 1
        assert node.kube.poster.retries >= 1
        await kill_a_hog(node, 1)
        assert kube.stalled() >= 1
        await events_handled(node, 2)
        assert node.kube.poster.counts["timed_out"] == 2
        assert not node.kube.cache.synced.is_set()
    assert node.agent.bus.failed["kubernetes"] == 0


async def test_events_get_500s_while_the_pod_watch_gets_410s(
    kube: KubeEmulator, cgroups: CgroupTree
) -> None:
    kube.fail("create", EVENTS_V1, times=None, status=500)
    kube.fail("update", EVENTS_V1, times=None, status=500)
    kube.fail("watch", PODS, times=None, status=410)
    async with guarded_node(kube, cgroups) as node:
        await kill_a_hog(node, 0)
        await events_handled(node, 1)
        assert node.kube.poster.counts == {"failed": 1}
        assert node.kube.poster.retries == 2
        await cache_reaches(node, "three 410s", lambda c: c.expired >= 3)
        await kill_a_hog(node, 1)
        await events_handled(node, 2)
        assert node.kube.poster.counts == {"failed": 2}
        assert node.kube.poster.retries == 4
        cache = node.kube.cache
        assert cache.relists >= 3  # every 410 is a new list ...
        assert cache.errors == 0  # ... not an error
        assert all(cache.lookup(uid) is not None for uid, _ in node.containers)
    assert kube.events() == []
    assert kube.request_count("create", EVENTS_V1) == 6


async def test_a_stuck_asyncio_loop(kube: KubeEmulator, cgroups: CgroupTree) -> None:
    loop_free = threading.Event()
    async with guarded_node(kube, cgroups) as node:
        uid = node.containers[0][0]
        await cache_reaches(node, "the pod cache syncing", lambda c: c.lookup(uid) is not None)
        node.kube.bridge.loop.call_soon_threadsafe(loop_free.wait)  # blocks the whole loop
        try:
            await kill_a_hog(node, 0)
            await events_handled(node, 1)
            await kill_a_hog(node, 1)
            await events_handled(node, 2)
        finally:
            loop_free.set()
        assert node.kube.sink.stalls == 2
        assert node.agent.bus.failed["kubernetes"] == 2
