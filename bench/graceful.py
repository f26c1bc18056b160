"""The graceful policy on real cgroups: how soon after the soft crossing the
SIGTERM goes, and how often a service with a SIGTERM handler gets to shut down
cleanly before the hard threshold.

    sudo .venv/bin/python -m bench.graceful [--runs 20] [--rate 200] [--limit-mib 256]

Each run: a fresh cgroup (--limit-mib), testing/workloads.py on-sigterm exit
(its handler writes "clean shutdown" to a marker file and exits 0) allocating
at --rate MiB/s, memguard (in this process, --policy graceful, default soft
margin) guarding it. Measured: the OomGuardTerminate report's latency (the v1
eventfd's wake-up at the soft level -> the SIGTERM issued; v2: the poll's
reading), and whether the run ended gracefully: marker written, exit 0, no
SIGKILL from memguard, kernel oom_kill 0.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile

import trio

from memguard.policy.margin import levels
from memguard.policy.model import MIB, Policy
from memguard.reports.report import ReportKind
from testing.agents import make_config, make_settings, report_matching, running_agent, wait_armed
from testing.cgroups import TEST_CGROUP_VERSION, new_tree

WORKLOADS = os.path.join(os.path.dirname(__file__), "..", "testing", "workloads.py")


def read(path: str) -> str:
    with open(path) as file:
        return file.read()


async def one_run(limit_mib: int, rate: float, directory: str, index: int) -> dict[str, object]:
    tree = new_tree(TEST_CGROUP_VERSION)
    marker = os.path.join(directory, f"marker-{index}")
    try:
        cgroup = tree.container(limit_bytes=limit_mib * MIB)
        argv = [sys.executable, WORKLOADS, "on-sigterm", "exit", marker, "4096", str(rate)]
        app = tree.spawn(cgroup, argv, name="on-sigterm")
        config = make_config(tree.parent, policy=Policy.GRACEFUL)
        async with running_agent(config) as (agent, collect):
            await wait_armed(agent, cgroup)
            app.go()
            report = await report_matching(
                collect,
                lambda r: (
                    r.cgroup == cgroup
                    and r.kind in (ReportKind.TERMINATE, ReportKind.KILL_CONTAINER)
                ),
                "the graceful try's report",
            )
            code = await app.exited()
        clean = pathlib.Path(marker).is_file() and read(marker) == "clean shutdown\n"  # noqa: ASYNC240
        return {
            "kind": report.kind.value,
            "latency_s": report.latency_s,
            "exit": code,
            "marker": clean,
            "oom_kills": tree.oom_kills(cgroup),
            "graceful": report.kind is ReportKind.TERMINATE
            and clean
            and code == 0
            and tree.oom_kills(cgroup) == 0,
        }
    finally:
        tree.cleanup()


async def main(runs: int, rate: float, limit_mib: int) -> None:
    marks = levels(limit_mib * MIB, make_settings(policy=Policy.GRACEFUL))
    assert marks is not None
    assert marks.soft is not None
    print(
        f"cgroup v{TEST_CGROUP_VERSION}, limit {limit_mib} MiB, soft {marks.soft / MIB:.1f} MiB, "
        f"hard {marks.threshold / MIB:.1f} MiB, {rate:g} MiB/s, {runs} runs"
    )
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for index in range(runs):
            result = await one_run(limit_mib, rate, directory, index)
            print(index, result, flush=True)
            results.append(result)
    latencies = sorted(float(r["latency_s"]) * 1000 for r in results if r["latency_s"] is not None)  # type: ignore[arg-type]
    graceful = sum(1 for r in results if r["graceful"])
    if latencies:
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(
            f"soft crossing -> SIGTERM: median {statistics.median(latencies):.3f} ms, "
            f"p99 {p99:.3f} ms, max {latencies[-1]:.3f} ms ({len(latencies)} runs)"
        )
    print(f"ended gracefully: {graceful} of {runs}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--limit-mib", type=int, default=256)
    args = parser.parse_args()
    trio.run(main, args.runs, args.rate, args.limit_mib)
