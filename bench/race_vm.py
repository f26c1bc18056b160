"""--cgroup-version 2: boot the test VM once and run the race there (cgroup v2).

The VM (testing/run_in_vm.py: virtme-ng, QEMU TCG, Debian's kernel) sees the
host's files read-only: the bench compiles its C programs into the guest's
/tmp, writes its results to a directory shared with the host, and keeps the
page-cache file on an ext4 RAM disk (brd) - the guest's /tmp is an overlay on
tmpfs, whose pages are shmem and cannot be reclaimed without swap. The host
then copies the JSON to bench/results/race-v2.json, the memguard logs beside
it, and writes the BENCHMARKS.md section. TCG emulates the CPU: every time is
several times a real machine's, and the default is 10 trials per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from bench import race_report
from bench.race_trial import TrialResult
from testing.run_in_vm import run_in_vm_result

ROOT = race_report.ROOT
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
SCRATCH = "/run/memguard-bench-scratch"
VM_MEMORY_MIB = 2048
VM_TIMEOUT_S = 12 * 3600


def guest_command(argv: Sequence[str], rwdir: str) -> str:
    """The shell line the guest runs: a RAM-disk ext4 for the cache file, then the race."""
    scratch = (
        f"modprobe brd rd_nr=1 rd_size=131072 && mkfs.ext4 -q -F /dev/ram0 "
        f"&& mkdir -p {SCRATCH} && mount /dev/ram0 {SCRATCH}"
    )
    race = (
        f"cd {ROOT} && PYTHONDONTWRITEBYTECODE=1 {ROOT}/.venv/bin/python -m bench.race "
        f"--inside-vm --results-dir {rwdir} --scratch-dir {SCRATCH} {shlex.join(argv)}"
    )
    return f"{scratch} && {race}"


def run_in_vm(args: argparse.Namespace, argv: Sequence[str]) -> None:
    rwdir = tempfile.mkdtemp(prefix="memguard-bench-race-v2-")
    try:
        outcome = run_in_vm_result(
            guest_command(argv, rwdir),
            rwdir,
            memory_mib=VM_MEMORY_MIB,
            cpus=os.cpu_count() or 2,
            timeout_s=VM_TIMEOUT_S,
        )
        if outcome.returncode != 0:
            raise SystemExit(f"race: the benchmark failed in the VM (exit {outcome.returncode})")
        head, results = _collect(rwdir, argv)
        head["vm_wall_s"] = round(outcome.wall_s, 1)
        race_report.write_json(os.path.join(RESULTS_DIR, race_report.json_name(2)), head, results)
        race_report.publish(head, results)
    finally:
        shutil.rmtree(rwdir, ignore_errors=True)


def _collect(rwdir: str, argv: Sequence[str]) -> tuple[dict[str, Any], list[TrialResult]]:
    """The guest's results, with the host's command and CPU; its logs copied over."""
    with open(os.path.join(rwdir, race_report.json_name(2))) as file:
        document = json.load(file)
    logs = os.path.join(rwdir, "race-logs-v2")
    if os.path.isdir(logs):
        shutil.copytree(logs, os.path.join(RESULTS_DIR, "race-logs-v2"), dirs_exist_ok=True)
    results = [TrialResult(**{**t, "notes": tuple(t["notes"])}) for t in document.pop("trials")]
    document.pop("cells")
    host = race_report.machine_info()
    guest = document["machine"]
    guest["cpu"] = f"QEMU TCG guest ({guest['nproc']} vCPUs) on {host['cpu']}"
    guest["memory_gib"] = f"{guest['memory_gib']} (guest)"
    document["command"] = race_report.command_line(argv)
    document["setup"] += [
        "in the test VM: QEMU TCG (no KVM), Debian's kernel, cgroup v2; the C agent "
        "sets memory.high to the threshold (v2 has no usage eventfd: the `high` event "
        "in memory.events is the only notification before the limit) and kills with "
        "cgroup.kill; memguard-hold is memguard with --high-tripwire unless --hold-flags",
        "reduced: 10 trials per cell by default instead of 20 (TCG: 3 trials per cell "
        "took 26 min on this host, so 20 would take about 3 h); the whole matrix still "
        "runs; every time is several times a real machine's",
    ]
    return document, results
