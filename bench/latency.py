"""Notification -> kill latency on the real kernel (cgroup v1, as root).

    .venv/bin/python -m bench.latency [--runs 50] [--limit-mib 128] [--rate-mib-s 100]

Each run: a fresh container cgroup limited to --limit-mib, a hog allocating
towards 2x the limit at --rate-mib-s, memguard (process policy) guarding it.
Latency is measured inside memguard from the moment its eventfd woke it to the
moment pidfd_send_signal was called (Report.latency_s). Crossing -> kill: from
the hog's own reading of usage at or over the threshold (it prints one per MiB)
to the report's wall time - the figure bench/v2_signals.py gives for cgroup v2.
A run where the kernel's OOM killer acted first (oom_kill > 0) counts as lost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import trio

from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agents import make_config, reported, running_agent, wait_armed
from testing.cgroups import CgroupTree, new_tree

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


async def measure(
    tree: CgroupTree, runs: int, limit_mib: int, rate_mib_s: float
) -> dict[str, object]:
    latencies_s: list[float] = []
    crossing_s: list[float] = []
    lost = 0
    config = make_config(tree.parent, policy=Policy.PROCESS)
    async with running_agent(config) as (agent, collect):
        for index in range(runs):
            cgroup = tree.container(limit_bytes=limit_mib * MIB, index=index)
            hog = tree.hog(cgroup, target_mib=2 * limit_mib, rate_mib_s=rate_mib_s, progress=True)
            await wait_armed(agent, cgroup)
            hog.go()
            await hog.exited()
            if tree.oom_kills(cgroup) > 0:
                lost += 1
                mine = [r for r in collect.reports if r.cgroup == cgroup]
                print(
                    f"run {index}: the kernel OOM killer won; memguard reported "
                    f"{[(r.kind.value, r.latency_s, r.usage_bytes) for r in mine]}"
                )
            else:
                report = await reported(collect, cgroup, ReportKind.KILL_PROCESS)
                assert report.latency_s is not None
                latencies_s.append(report.latency_s)
                assert hog.process.stdout is not None
                threshold = report.threshold_bytes or 0
                crossed = [
                    float(line.split()[1])
                    for line in hog.process.stdout.read().splitlines()
                    if int(line.split()[2]) >= threshold
                ]
                if crossed:
                    crossing_s.append(report.wall_time_s - crossed[0])
            tree.remove(cgroup)
    latencies_ms = sorted(value * 1000 for value in latencies_s)
    p99_index = min(len(latencies_ms) - 1, round(0.99 * (len(latencies_ms) - 1)))
    return {
        "runs": runs,
        "kernel_won": lost,
        "median_ms": round(statistics.median(latencies_ms), 3),
        "p90_ms": round(latencies_ms[round(0.9 * (len(latencies_ms) - 1))], 3),
        "p99_ms": round(latencies_ms[p99_index], 3),
        "max_ms": round(latencies_ms[-1], 3),
        "min_ms": round(latencies_ms[0], 3),
        "crossing_to_kill_median_ms": round(statistics.median(crossing_s) * 1000, 3)
        if crossing_s
        else None,
        "crossing_to_kill_max_ms": round(max(crossing_s) * 1000, 3) if crossing_s else None,
        "limit_mib": limit_mib,
        "rate_mib_s": rate_mib_s,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--limit-mib", type=int, default=128)
    parser.add_argument("--rate-mib-s", type=float, default=100.0)
    args = parser.parse_args()
    tree = new_tree()
    started = time.monotonic()
    try:
        result = trio.run(measure, tree, args.runs, args.limit_mib, args.rate_mib_s)
    finally:
        tree.cleanup()
    result["wall_s"] = round(time.monotonic() - started, 1)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "latency.json"), "w") as file:
        json.dump(result, file, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
