"""Kill latency during a /metrics scrape storm, at the GIL switch interval memguard
sets (--priority auto: 0.5 ms) next to the interpreter's default (5 ms).

    .venv/bin/python -m bench.scrape_storm [--runs 20] [--containers 1000] [--scrapers 8]

One agent (container policy, in this process, /metrics served as `memguard run`
serves it) guards --containers idle containers plus a fresh 128 MiB container
per trial, which a hog fills at --rate-mib-s (1 GiB/s by default: 2.6 MiB of
margin is ~2.5 ms of headroom). Trials rotate over four conditions, so the
machine's noise hits all alike: quiet or storm (another process whose
--scrapers threads scrape /metrics in a loop) x switch interval 5 ms or 0.5 ms
(set in this process before the hog starts). Latency is the agent's own
wake -> SIGKILL (Report.latency_s); a trial where the kernel's OOM killer acted
first counts as lost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

import trio

from memguard.cli.observe import metrics_scraper, routes
from memguard.guarding.agent import Agent
from memguard.policy.model import MIB
from memguard.reports.collect_sink import CollectSink
from memguard.reports.http import HealthServer, bind
from memguard.reports.metrics import MetricsSink
from memguard.reports.report import ReportKind
from testing.agents import make_config, reported, running_agent, wait_armed
from testing.cgroups import CgroupTree, new_tree

INTERVALS_S = (0.005, 0.0005)  # the interpreter's default, then memguard's
CONDITIONS = tuple((storm, s) for storm in (False, True) for s in INTERVALS_S)
RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
SCRAPER = """
import sys, threading, urllib.request
url, count = sys.argv[1], int(sys.argv[2])
def scrape():
    while True:
        try:
            urllib.request.urlopen(url, timeout=30).read()
        except OSError:
            pass
for _ in range(count):
    threading.Thread(target=scrape, daemon=True).start()
threading.Event().wait()
"""


def name(condition: tuple[bool, float]) -> str:
    storm, interval_s = condition
    return f"{'storm' if storm else 'quiet'}, switch interval {interval_s * 1000:g} ms"


def summary(values_s: Sequence[float], trials: int, lost: int) -> dict[str, object]:
    ordered = sorted(values_s) or [float("nan")]

    def at_ms(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] * 1000, 3)

    return {
        "trials": trials,
        "kernel_won": lost,
        "median_ms": at_ms(0.5),
        "p90_ms": at_ms(0.9),
        "max_ms": at_ms(1.0),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def measure(tree: CgroupTree, args: argparse.Namespace) -> dict[str, dict[str, object]]:
    latencies: dict[tuple[bool, float], list[float]] = {c: [] for c in CONDITIONS}
    lost = dict.fromkeys(CONDITIONS, 0)
    for index in range(args.containers):
        tree.container(limit_bytes=256 * MIB, index=10_000 + index)
    config = make_config(tree.parent, cooldown_s=0.0)
    sink = MetricsSink()
    async with running_agent(config, sinks=[sink]) as (agent, collect):
        scraper = metrics_scraper(agent, None, sink)
        server = HealthServer(await bind("127.0.0.1", 0), routes(agent, scraper))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            url = f"http://127.0.0.1:{server.bound_port}/metrics"
            for index in range(args.runs * len(CONDITIONS)):
                condition = CONDITIONS[index % len(CONDITIONS)]
                won = await trial(tree, agent, collect, index, condition, url, args)
                if won is None:
                    lost[condition] += 1
                else:
                    latencies[condition].append(won)
            nursery.cancel_scope.cancel()
    return {name(c): summary(latencies[c], args.runs, lost[c]) for c in CONDITIONS}


async def trial(
    tree: CgroupTree,
    agent: Agent,
    collect: CollectSink,
    index: int,
    condition: tuple[bool, float],
    url: str,
    args: argparse.Namespace,
) -> float | None:
    """One hog; its wake -> SIGKILL latency, None when the kernel killed first."""
    storm, interval_s = condition
    cgroup = tree.container(limit_bytes=128 * MIB, index=index)
    hog = tree.hog(cgroup, target_mib=256, rate_mib_s=args.rate_mib_s)
    await wait_armed(agent, cgroup)
    scrapers = None
    if storm:
        argv = [sys.executable, "-c", SCRAPER, url, str(args.scrapers)]
        scrapers = await trio.lowlevel.open_process(argv)
        await trio.sleep(1.0)  # a storm under way, not its start: bench timing only
    previous_s = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    try:
        hog.go()
        await hog.exited()
    finally:
        sys.setswitchinterval(previous_s)
        if scrapers is not None:
            scrapers.kill()
            await scrapers.wait()
    try:
        if tree.oom_kills(cgroup) > 0:
            return None
        report = await reported(collect, cgroup, ReportKind.KILL_CONTAINER)
        assert report.latency_s is not None
        return report.latency_s
    finally:
        tree.remove(cgroup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="trials per condition")
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--scrapers", type=int, default=8)
    parser.add_argument("--rate-mib-s", type=int, default=1024)
    args = parser.parse_args()
    tree = new_tree()
    started = time.monotonic()
    try:
        result = trio.run(measure, tree, args)
    finally:
        tree.cleanup()
    output = {"conditions": result, "wall_s": round(time.monotonic() - started, 1)}
    output.update(vars(args), cpus=os.cpu_count(), kernel=os.uname().release)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "scrape_storm.json"), "w") as file:
        json.dump(output, file, indent=1)
    print(json.dumps(output, indent=1))


if __name__ == "__main__":
    main()
