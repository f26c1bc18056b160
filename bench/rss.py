"""RSS and idle cost of `memguard run` guarding N real empty cgroups (cgroup v1, root).

    .venv/bin/python -m bench.rss [--cgroups 200] [--idle-s 10]

Starts the real daemon (`memguard run`) on a private tree of N container
cgroups, waits until every guard has armed its kernel threshold, then samples
/proc/<pid>: VmRSS, CPU time and context switches over --idle-s seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from bench.kube_events import _kubeconfig
from memguard.policy.model import MIB
from testing.cgroups import CgroupTree, new_tree
from testing.kube.emulator import make_pod

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as file:
        return dict(line.split(":", 1) for line in file.read().splitlines() if ":" in line)


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def _switches(pid: int) -> int:
    status = _status(pid)
    return int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"])


def _wait_armed(daemon: subprocess.Popen[str], count: int) -> float:
    """Read JSON log lines until count guards have armed; seconds it took."""
    started = time.monotonic()
    armed = 0
    assert daemon.stderr is not None
    for line in daemon.stderr:
        if '"msg": "guarding ' in line:
            armed += 1
            if armed == count:
                return time.monotonic() - started
    raise RuntimeError(f"memguard exited after arming {armed} of {count} guards")


def measure(
    tree: CgroupTree, cgroups: int, idle_s: float, kubeconfig: str | None
) -> dict[str, object]:
    for index in range(cgroups):
        tree.container(limit_bytes=256 * MIB, index=index)
    command = [
        sys.executable,
        "-m",
        "memguard.cli",
        "run",
        "--parent",
        tree.parent,
        "--log-format",
        "json",
        "--kubernetes",
        "auto" if kubeconfig else "off",
    ]
    if kubeconfig:
        command += ["--kubeconfig", kubeconfig, "--node-name", "bench-node"]
    daemon = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        startup_s = _wait_armed(daemon, cgroups)
        cpu_before, switches_before = _cpu_s(daemon.pid), _switches(daemon.pid)
        time.sleep(idle_s)  # the measurement window itself
        cpu_s = _cpu_s(daemon.pid) - cpu_before
        switches = _switches(daemon.pid) - switches_before
        status = _status(daemon.pid)
        fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
    finally:
        daemon.send_signal(signal.SIGTERM)
        exit_code = daemon.wait(timeout=30)
    return {
        "cgroups": cgroups,
        "startup_to_all_armed_s": round(startup_s, 3),
        "vm_rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "vm_hwm_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1),
        "idle_window_s": idle_s,
        "idle_cpu_percent": round(100 * cpu_s / idle_s, 3),
        "idle_context_switches_per_s": round(switches / idle_s, 2),
        "open_fds": fds,
        "threads": int(status["Threads"]),
        "exit_code_after_sigterm": exit_code,
    }


def _start_stub(work: str) -> tuple[subprocess.Popen[str], int]:
    """bench/apiserver_stub.py serving 100 pods on this node."""
    pods = [make_pod("bench", f"p-{i}", node_name="bench-node") for i in range(100)]
    with open(os.path.join(work, "pods.json"), "w") as file:
        json.dump(pods, file)
    command = [sys.executable, "-m", "bench.apiserver_stub", os.path.join(work, "pods.json")]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, int(server.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cgroups", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="Kubernetes features on, against bench/apiserver_stub.py",
    )
    args = parser.parse_args()
    tree = new_tree()
    work = tempfile.mkdtemp(prefix="memguard-bench-")
    server = _start_stub(work) if args.kubernetes else None
    try:
        kubeconfig = _kubeconfig(work, server[1]) if server else None
        result = measure(tree, args.cgroups, args.idle_s, kubeconfig)
        result["kubernetes"] = args.kubernetes
    finally:
        tree.cleanup()
        if server:
            server[0].terminate()
            server[0].wait()
    os.makedirs(RESULTS_DIR, exist_ok=True)
    suffix = "-kube" if args.kubernetes else ""
    with open(os.path.join(RESULTS_DIR, f"rss-{args.cgroups}{suffix}.json"), "w") as file:
        json.dump(result, file, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
