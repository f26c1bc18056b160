"""/metrics with many containers: scrape size, series, and what a scrape costs.

    .venv/bin/python -m bench.metrics_scrape [--containers 100] [--scrapes 20]

`memguard run` guards a fake tree of --containers containers (both kubelet
drivers, Guaranteed and Burstable, 256 MiB limits, one process each), with
Kubernetes on against bench/apiserver_stub.py (one pod per container, so every
series carries namespace, pod and container), and is scraped --scrapes times,
1.1 s apart (each scrape then reads the containers' files: memguard reads them
at most once a second). Reported: the body's bytes, the series (samples) in
all and per container, the scrape's wall time at the client (median, max) and
memguard's own figure for its pass over the containers' files. Results go to
bench/results/metrics_scrape.json.
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
from typing import Any

import trio

from memguard.fake import tree
from memguard.policy.model import MIB
from testing import scrape
from testing.agentproc import agent_process, wait_until
from testing.kube.emulator import make_pod

NODE = "bench-node"
RESULTS_PATH = os.path.join(os.path.dirname(__file__), "results", "metrics_scrape.json")
CONTAINER_FAMILIES = (
    "memguard_container_usage_bytes",
    "memguard_container_threshold_bytes",
    "memguard_container_limit_bytes",
    "memguard_container_page_cache_bytes",
)


def pod_specs(count: int) -> tuple[tree.PodSpec, ...]:
    specs = []
    for index in range(count):
        driver = ("cgroupfs", "systemd")[index % 2]
        qos = ("Guaranteed", "Burstable")[index // 2 % 2]
        specs.append(
            tree.PodSpec(f"web-{index:03d}", qos, driver, "cri-containerd", 256 * MIB, processes=1)
        )
    return tuple(specs)


def pods_for(containers: list[tree.FakeContainer]) -> list[dict[str, Any]]:
    """A deployment-like pod per container (names as long as real ones)."""
    pods = []
    for container in containers:
        uid = container.ref.pod_uid
        assert uid is not None
        name = f"checkout-{container.name}-7d9f8c6b5-x2x4q"
        pod = make_pod("shop-prod", name, uid=uid, node_name=NODE, containers=("app",))
        status = pod["status"]["containerStatuses"][0]
        status["containerID"] = f"containerd://{container.ref.container_id}"
        pods.append(pod)
    return pods


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


async def measure(args: list[str], log_path: str, containers: int, scrapes: int) -> dict[str, Any]:
    with agent_process(args, stderr=open_log(log_path)) as agent:
        await agent.wait_ready(120)

        async def labelled() -> bool:
            text = await agent.metrics()
            pods = scrape.label_values(text, "memguard_container_usage_bytes", "pod")
            return len(pods - {""}) == containers

        await wait_until(labelled, 60, "every container's series named after its pod")
        sizes, walls, passes, series = [], [], [], []
        text = ""
        for _ in range(scrapes):
            await trio.sleep(1.1)  # past the readers' interval: every scrape reads the files
            started = time.perf_counter()
            text = await agent.metrics()
            walls.append(time.perf_counter() - started)
            sizes.append(len(text.encode()))
            series.append(scrape.series_count(text))
            passes.append(scrape.value(text, "memguard_container_read_duration_seconds") or 0.0)
        assert agent.stop() == 0
    families = scrape.parse(text)
    per_container = sum(len(families[name].samples) for name in CONTAINER_FAMILIES)
    return {
        "bytes": statistics.median(sizes),
        "series": statistics.median(series),
        "container_series": per_container,
        "other_series": statistics.median(series) - per_container,
        "families": len(families),
        "scrape_ms_median": round(statistics.median(walls) * 1000, 2),
        "scrape_ms_max": round(max(walls) * 1000, 2),
        "read_pass_ms_median": round(statistics.median(passes) * 1000, 2),
        "problems": scrape.problems(text),
    }


def open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=20)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memguard-bench-metrics-") as work:
        root = os.path.join(work, "tree")
        containers = tree.build(root, pod_specs(options.containers))
        with open(os.path.join(work, "pods.json"), "w") as file:
            json.dump(pods_for(containers), file)
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.apiserver_stub", os.path.join(work, "pods.json")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            kubeconfig = _kubeconfig(work, int(server.stdout.readline()))
            args = ["--parent", root, "--kubeconfig", kubeconfig, "--node-name", NODE]
            log_path = os.path.join(work, "memguard.log")
            result = trio.run(measure, args, log_path, options.containers, options.scrapes)
        finally:
            server.terminate()
            server.wait()
            tree.kill_and_reap(pid for c in containers for pid in c.pids)
    result = {"containers": options.containers, "scrapes": options.scrapes, **result}
    os.makedirs(os.path.dirname(RESULTS_PATH), exist_ok=True)
    with open(RESULTS_PATH, "w") as file:
        json.dump(result, file, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
