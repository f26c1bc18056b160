"""The race against the kernel OOM killer (issue 11), side by side in one run.

    sudo .venv/bin/python -m bench.race [--trials 20] [--quick] [--hold-flags=--hold-at-limit]
        [--agents none,c-ref,memguard,memguard-hold] [--rates 100MiB/s,1GiB/s,max]
        [--workloads anon,cache+anon,300procs+anon,forkbomb] [--nodes idle,busy]
        [--cgroup-version 1|2]

Contestants (bench/race_agents.py): no agent; the C reference agent
(bench/c/ref_agent.c: one threshold eventfd at memguard's own threshold, then
SIGKILL all of cgroup.procs); `memguard run` with default flags; memguard with
--hold-flags (skipped, with a note, when `memguard run --help` lacks them).
Matrix: fill rate x workload (bench/race_workloads.py) x node (idle; busy: one
spinning process per CPU and each agent in a 500m CPU cgroup), a 128 MiB
container. Within a cell the trials are interleaved: round r runs every agent
once, in an order rotated by r, so the machine's noise hits all alike.

Results: bench/results/race.json (every trial), a table per cell in
BENCHMARKS.md, memguard's logs in bench/results/race-logs/. --cgroup-version 2
boots the test VM and runs the same there (bench/race_vm.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

import trio

from bench.race_procs import become_subreaper
from bench.race_run import AGENTS, NODES, RATES_MIB_S, Race, run_until_sigterm
from bench.race_workloads import Workload

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
HOLD_FLAGS = {1: "--hold-at-limit", 2: "--high-tripwire"}
QUICK_TRIALS = 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help="per cell and agent (v1 20, v2 10)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRIALS} trials per cell")
    parser.add_argument(
        "--hold-flags",
        help="memguard-hold's flags, as --hold-flags=... (v1 --hold-at-limit, v2 --high-tripwire)",
    )
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--rates", default=",".join(RATES_MIB_S))
    parser.add_argument("--workloads", default=",".join(w.value for w in Workload))
    parser.add_argument("--nodes", default=",".join(NODES))
    parser.add_argument("--cgroup-version", type=int, choices=(1, 2), default=1)
    parser.add_argument("--scratch-dir", help="where the page-cache file goes (not tmpfs)")
    parser.add_argument("--results-dir", default=RESULTS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--inside-vm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trials is None:
        args.trials = QUICK_TRIALS if args.quick else {1: 20, 2: 10}[args.cgroup_version]
    if args.hold_flags is None:
        args.hold_flags = HOLD_FLAGS[args.cgroup_version]
    for name, known in (
        ("agents", AGENTS),
        ("rates", tuple(RATES_MIB_S)),
        ("workloads", tuple(w.value for w in Workload)),
        ("nodes", NODES),
    ):
        chosen = [item for item in getattr(args, name).split(",") if item]
        unknown = set(chosen) - set(known)
        if unknown or not chosen:
            parser.error(f"--{name}: choose from {', '.join(known)} (got {sorted(unknown)})")
        setattr(args, name, chosen)
    return args


def check_host(version: int) -> None:
    if os.geteuid() != 0:
        raise SystemExit("race: run as root (it makes cgroups and kills in them)")
    needed = ("memory", "freezer", "pids", "cpu") if version == 1 else ("",)
    for hierarchy in needed:
        if not os.path.isfile(os.path.join("/sys/fs/cgroup", hierarchy, "cgroup.procs")):
            raise SystemExit(f"race: no cgroup v{version} {hierarchy} hierarchy at /sys/fs/cgroup")


def main() -> None:
    args = parse_args()
    if args.cgroup_version == 2 and not args.inside_vm:
        from bench.race_vm import run_in_vm  # only this mode boots a VM

        run_in_vm(args, sys.argv[1:])
        return
    check_host(args.cgroup_version)
    become_subreaper()
    work_dir = tempfile.mkdtemp(prefix="memguard-bench-race-")
    race: Race | None = None
    finished = False
    try:
        race = Race(args, work_dir)
        finished = trio.run(run_until_sigterm, race)
    except* KeyboardInterrupt:
        print("race: interrupted (Ctrl-C): cleaning up", file=sys.stderr)
    finally:  # outside trio: runs even if trio itself failed
        if race is not None:
            race.close()
        shutil.rmtree(work_dir, ignore_errors=True)
    if not finished:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
