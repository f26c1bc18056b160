"""Boot the test VM once and run bench/v2_signals.py on its cgroup v2 kernel.

    sudo .venv/bin/python -m bench.v2_vm [--runs 20]

QEMU TCG emulates the CPU (no KVM here): absolute times are slower than on
hardware; compare them with bench/latency.py's v1 figures on this host.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile

from testing.run_in_vm import run_in_vm_result

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--idle-cgroups", type=int, default=200)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="memguard-v2bench-")
    result_path = os.path.join(work, "v2_signals.json")
    command = (
        f"cd {ROOT} && PYTHONDONTWRITEBYTECODE=1 {ROOT}/.venv/bin/python -m "
        f"bench.v2_signals {result_path} --runs {args.runs} "
        f"--idle-cgroups {args.idle_cgroups}"
    )
    outcome = run_in_vm_result(command, work, memory_mib=1536, timeout_s=3600)
    if outcome.returncode != 0:
        raise SystemExit(f"the benchmark failed in the VM (exit {outcome.returncode})")
    with open(result_path) as file:
        results = json.load(file)
    results["vm_wall_s"] = round(outcome.wall_s, 1)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "v2_signals.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
