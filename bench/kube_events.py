"""Kubernetes Events: kill -> Event stored latency, and the Event sink's throughput.

    .venv/bin/python -m bench.kube_events [--kills 100] [--burst 2000]

memguard (Kubernetes features on, process policy) guards a fake tree with one
pod per container; the API server is bench/apiserver_stub.py in its own
process (the kmock test emulator validates every write and shares memguard's
GIL: it would measure itself). kill -> Event: from the report's wall time
(taken right after the SIGKILL) to the Event's arrival at the server.
Throughput: --burst reports about --burst distinct pods published at once
(the queue holds them all): Events created per second until all are stored.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import trio

from memguard.fake import drive, model, tree
from memguard.guarding.agent import Agent
from memguard.kube.connection import Connection
from memguard.kube.features import KubeFeatures, open_kube
from memguard.policy.model import MIB, Policy
from memguard.policy.paths import ContainerRef
from memguard.reports.bus import ReportBus
from memguard.reports.collect_sink import CollectSink
from memguard.reports.report import Report, ReportKind
from testing.agents import compose_agent, make_config, reported, until, wait_armed
from testing.kube.emulator import make_pod
from testing.waits import bounded

NODE = "bench-node"
RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def _percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(share * (len(sorted_values) - 1)))]


def _kubeconfig(directory: str, port: int) -> str:
    path = os.path.join(directory, "kubeconfig")
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
    }  # fmt: skip
    with open(path, "w") as file:
        json.dump(config, file)
    return path


def _fake_containers(root: str, count: int) -> list[tuple[str, int, dict[str, Any]]]:
    """count fake containers with one sleeper each, and a Pod for each."""
    made = []
    for index in range(count):
        uid, cid = str(uuid.uuid4()), uuid.uuid4().hex * 2
        path = os.path.join(root, "kubepods", "burstable", f"pod{uid}", cid)
        pid = tree.spawn_sleeper()
        model.create(path, model.FakeMemory(limit_bytes=64 * MIB, pids=[pid]))
        pod = make_pod("bench", f"app-{index}", uid=uid, node_name=NODE)
        pod["status"]["containerStatuses"][0]["containerID"] = f"containerd://{cid}"
        made.append((path, pid, pod))
    return made


async def _features(kubeconfig: str) -> KubeFeatures:
    features = await open_kube(Connection(False, kubeconfig), NODE, explicit=True)
    assert features is not None
    return features


def events_posted(agent: Agent, count: int) -> Callable[[], bool]:
    return lambda: agent.bus.handled("kubernetes") >= count


async def kill_to_event(root: str, kubeconfig: str, containers: list[str]) -> list[float]:
    """Kill in each container in turn; the report wall times, in order."""
    features = await _features(kubeconfig)
    collect = CollectSink()
    agent, _ = compose_agent(
        make_config(root, policy=Policy.PROCESS),
        [collect, features.sink],
        [("pod-cache", features.run)],
        features.cache,
    )
    wall_times = []
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        await bounded(
            features.bridge.run(features.cache.wait_until(lambda c: len(c) >= len(containers))),
            f"{len(containers)} pods in the pod cache",
        )
        for index, path in enumerate(containers):
            await wait_armed(agent, path)
            drive.step(root, path, drive.Kind.ANON, 63 * MIB)
            report = await reported(collect, path, ReportKind.KILL_PROCESS)
            await until(agent.bus.changes, events_posted(agent, index + 1), "the Event posted")
            wall_times.append(report.wall_time_s)
        agent.stop()
    assert features.poster.counts == {"created": len(containers)}, features.poster.counts
    return wall_times


async def throughput(kubeconfig: str, pod_uids: list[str]) -> dict[str, Any]:
    features = await _features(kubeconfig)
    bus = ReportBus([features.sink], capacity=len(pod_uids))
    reports = [
        Report(ReportKind.KILL_CONTAINER, f"/x/{uid}", ContainerRef(uid, None, None, None, "leaf"),
               1, 2, 1, "container", "killed container")
        for uid in pod_uids
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(features.run)
        nursery.start_soon(bus.run)
        await bounded(
            features.bridge.run(features.cache.wait_until(lambda c: len(c) >= len(pod_uids))),
            f"{len(pod_uids)} pods in the pod cache",
        )
        started = time.monotonic()
        for report in reports:
            bus.publish(report)
        await until(
            bus.changes, lambda: bus.handled("kubernetes") >= len(reports), "every Event posted"
        )
        elapsed_s = time.monotonic() - started
        bus.close()
        nursery.cancel_scope.cancel()
    return {
        "reports": len(reports),
        "events_per_s": round(len(reports) / elapsed_s, 1),
        "outcomes": dict(features.poster.counts),
        "retries": features.poster.retries,
        "dropped": sum(bus.dropped.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="memguard-bench-")
    root = os.path.join(work, "tree")
    model.make_root(root)
    containers = _fake_containers(root, args.kills)
    burst_pods = [make_pod("burst", f"b-{i}", node_name=NODE) for i in range(args.burst)]
    with open(os.path.join(work, "pods.json"), "w") as file:
        json.dump([pod for _, _, pod in containers] + burst_pods, file)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.apiserver_stub", os.path.join(work, "pods.json")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        kubeconfig = _kubeconfig(work, port)
        wall_times = trio.run(kill_to_event, root, kubeconfig, [p for p, _, _ in containers])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats") as answer:
            arrivals = [arrival for _, arrival, _ in json.load(answer)["events"]]
        burst = trio.run(throughput, kubeconfig, [p["metadata"]["uid"] for p in burst_pods])
    finally:
        server.terminate()
        server.wait()
        tree.kill_and_reap(pid for _, pid, _ in containers)
    latencies_ms = sorted((a - w) * 1000 for a, w in zip(arrivals, wall_times, strict=True))
    result = {
        "kill_to_event": {"kills": args.kills,
                          "median_ms": round(statistics.median(latencies_ms), 2),
                          "p99_ms": round(_percentile(latencies_ms, 0.99), 2),
                          "max_ms": round(latencies_ms[-1], 2)},
        "throughput": burst,
    }  # fmt: skip
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "kube_events.json"), "w") as file:
        json.dump(result, file, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
