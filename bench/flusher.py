"""The page-cache flusher on the real kernel: a 200 MiB page-cache cgroup.

    sudo .venv/bin/python -m bench.flusher [--runs 5] [--cache-mib 200]

Each run: a container cgroup (1 GiB limit) whose dd wrote --cache-mib to a
file (page cache charged to it, synced), then memguard with
--flush-cache-above 16Mi; the FLUSH report gives cache before/after and the
flush's duration (force_empty on v1, memory.reclaim of the excess on v2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from typing import Any

import trio

from memguard.policy.model import MIB, CacheLimit
from memguard.reports.report import ReportKind
from testing.agents import make_config, reported, running_agent
from testing.cgroups import TEST_CGROUP_VERSION, CgroupTree, new_tree

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


async def measure(tree: CgroupTree, runs: int, cache_mib: int, directory: str) -> dict[str, Any]:
    """Each run: dd fills the cache first (no agent yet, so nothing reclaims while it
    writes), then an agent starts and its flusher's first flush is measured."""
    reclaimed_mib: list[float] = []
    durations_ms: list[float] = []
    config = make_config(
        tree.parent, cache_flush_above=CacheLimit(size_bytes=16 * MIB), cache_flush_interval_s=0.2
    )
    for index in range(runs):
        cgroup = tree.container(1024 * MIB, index=index)
        target = os.path.join(directory, f"cache-{index}")
        dd = tree.spawn(
            cgroup,
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={cache_mib}", "conv=fsync"],
        )
        dd.go()
        assert await dd.exited() == 0
        async with running_agent(config) as (_, collect):
            report = await reported(collect, cgroup, ReportKind.FLUSH)
        assert report.cache_before_bytes is not None
        assert report.cache_after_bytes is not None
        reclaimed_mib.append((report.cache_before_bytes - report.cache_after_bytes) / MIB)
        durations_ms.append(report.duration_s * 1000)
        os.unlink(target)
        tree.remove(cgroup)
    return {
        "cgroup_version": TEST_CGROUP_VERSION, "runs": runs, "cache_mib": cache_mib,
        "reclaimed_mib_median": round(statistics.median(reclaimed_mib), 1),
        "flush_ms_median": round(statistics.median(durations_ms), 1),
        "flush_ms_max": round(max(durations_ms), 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache-mib", type=int, default=200)
    parser.add_argument(
        "--dir", default=tempfile.gettempdir(), help="a directory on a filesystem with page cache"
    )
    args = parser.parse_args()
    tree = new_tree(TEST_CGROUP_VERSION)
    try:
        result = trio.run(measure, tree, args.runs, args.cache_mib, args.dir)
    finally:
        tree.cleanup()
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"flusher-v{TEST_CGROUP_VERSION}.json"), "w") as file:
        json.dump(result, file, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
