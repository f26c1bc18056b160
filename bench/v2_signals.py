"""cgroup v2: crossing -> kill time and race outcome per wake-up signal, and the
idle cost of the adaptive poll. Runs INSIDE the test VM (bench/v2_vm.py boots it).

    python -m bench.v2_signals RESULT_JSON [--runs 20] [--idle-cgroups 200] [--idle-s 20]

Each run: a container cgroup limited to 128 MiB, a hog allocating 1 MiB chunks
at 100 MiB/s towards 256 MiB that prints a timestamp per chunk, memguard
(process policy) with only the signal under test. The crossing time is when the
hog finished the chunk that brought memory.current to the threshold; the kill
time is the report's wall time. A run where memory.events counts an oom_kill
was won by the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
from typing import Any

import trio

from memguard.backends.v2 import Tripwire, V2Settings
from memguard.policy.margin import threshold_bytes
from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agents import make_config, make_settings, reported, running_agent, wait_armed
from testing.cgroups import CgroupTree, new_tree

LIMIT_MIB = 128
RATE_MIB_S = 100.0
# One signal at a time, the tripwire off (its default, auto, would set memory.high
# and make every row measure the tripwire); then the tripwire alone, then defaults.
CONFIGS = {
    "poll": V2Settings(signals=frozenset({"poll"}), high_tripwire=Tripwire.OFF),
    "psi": V2Settings(signals=frozenset({"psi"}), high_tripwire=Tripwire.OFF),
    "events": V2Settings(signals=frozenset({"events"}), high_tripwire=Tripwire.OFF),
    "events+tripwire": V2Settings(signals=frozenset({"events"}), high_tripwire=Tripwire.ON),
    "default (events,psi,poll; tripwire auto)": V2Settings(),
}


async def one_signal(tree: CgroupTree, settings: V2Settings, runs: int) -> dict[str, Any]:
    threshold = threshold_bytes(LIMIT_MIB * MIB, make_settings())
    assert threshold is not None
    crossing_to_kill_ms: list[float] = []
    woke_by: dict[str, int] = {}
    kernel_won = 0
    config = make_config(tree.parent, policy=Policy.PROCESS, v2=settings)
    async with running_agent(config) as (agent, collect):
        for index in range(runs):
            cgroup = tree.container(LIMIT_MIB * MIB, index=index)
            hog = tree.hog(cgroup, target_mib=2 * LIMIT_MIB, rate_mib_s=RATE_MIB_S, progress=True)
            await wait_armed(agent, cgroup)
            hog.go()
            await hog.exited()
            assert hog.process.stdout is not None
            progress = [line.split() for line in hog.process.stdout.read().splitlines()]
            if tree.oom_kills(cgroup) > 0:
                kernel_won += 1
                continue
            report = await reported(collect, cgroup, ReportKind.KILL_PROCESS)
            crossed = [float(stamp) for _, stamp, usage in progress if int(usage) >= threshold]
            if crossed:  # the first chunk after which usage was over the threshold
                crossing_to_kill_ms.append((report.wall_time_s - crossed[0]) * 1000)
            woke_by[report.woke_by] = woke_by.get(report.woke_by, 0) + 1
    values = sorted(crossing_to_kill_ms)
    return {
        "runs": runs,
        "kernel_won": kernel_won,
        "memguard_won": runs - kernel_won,
        "crossing_to_kill_median_ms": round(statistics.median(values), 1) if values else None,
        "crossing_to_kill_max_ms": round(values[-1], 1) if values else None,
        "woke_by": woke_by,
    }


async def idle_cpu(tree: CgroupTree, settings: V2Settings, cgroups: int, idle_s: float) -> float:
    """CPU percent of this process while memguard guards idle cgroups."""
    paths = [tree.container(256 * MIB, index=1000 + i) for i in range(cgroups)]
    async with running_agent(make_config(tree.parent, v2=settings)) as (agent, _):
        for path in paths:
            await wait_armed(agent, path)
        before = resource.getrusage(resource.RUSAGE_SELF)
        await trio.sleep(idle_s)  # the measurement window
        after = resource.getrusage(resource.RUSAGE_SELF)
    for path in paths:
        tree.remove(path)
    used_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(100 * used_s / idle_s, 3)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "limit_mib": LIMIT_MIB,
        "rate_mib_s": RATE_MIB_S,
    }
    for name, settings in CONFIGS.items():
        tree = new_tree(2)
        try:
            results[name] = await one_signal(tree, settings, args.runs)
        finally:
            tree.cleanup()
        print(name, results[name], file=sys.stderr, flush=True)
    tree = new_tree(2)
    try:
        results["idle_cpu_percent"] = {
            "poll": await idle_cpu(
                tree, V2Settings(signals=frozenset({"poll"})), args.idle_cgroups, args.idle_s
            ),
            "events_only": await idle_cpu(
                tree, V2Settings(signals=frozenset({"events"})), args.idle_cgroups, args.idle_s
            ),
            "cgroups": args.idle_cgroups,
            "window_s": args.idle_s,
        }
    finally:
        tree.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--idle-cgroups", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=20.0)
    args = parser.parse_args()
    results = trio.run(main_async, args)
    with open(args.result, "w") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
