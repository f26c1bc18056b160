"""What `memguard status` costs the agent: its CPU with and without viewers.

    .venv/bin/python -m bench.status_cost [--containers 100] [--phase-s 60] [--rounds 1]

Starts `memguard run` on a fake tree of N containers (one real sleeping
process each) with its status socket, waits until every guard is armed, then
samples the agent's /proc/<pid>/stat (utime + stime) and context switches over
phases run one after the other, in each round:
  idle      nobody looks
  viewer    one real `memguard status --interval 1s` on a pseudo-terminal
            (rich's live table, as an operator runs it)
  crowd     --crowd viewers at --crowd-interval each (default 10 at 100 ms):
            the page is built at most every 0.5 s whoever asks
Writes bench/results/status_cost.json. Run it as root or not (a fake tree).
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from memguard.cli.status import NoAgent, Source
from memguard.fake import tree
from memguard.policy.model import MIB

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
MEMGUARD = [sys.executable, "-m", "memguard.cli"]


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        rows = dict(line.split(":", 1) for line in file if ":" in line)
    return int(rows["voluntary_ctxt_switches"]) + int(rows["nonvoluntary_ctxt_switches"])


def pods(count: int) -> tuple[tree.PodSpec, ...]:
    return tuple(
        tree.PodSpec(f"app{index}", "Burstable", "cgroupfs", "cri-containerd", 256 * MIB, 1)
        for index in range(count)
    )


def wait_armed(source: Source, count: int, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            agent = source.fetch()["agent"]
            if agent["armed"] == count and agent["ready"]:
                return
        except NoAgent:  # not listening yet: keep waiting (bounded)
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the agent did not arm {count} guards within {timeout_s:.0f}s")


@contextmanager
def viewers(sock: str, count: int, interval: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """count live `memguard status` views, each on its own pseudo-terminal (drained)."""
    started: list[subprocess.Popen[bytes]] = []
    masters: list[int] = []
    env = {**os.environ, "COLUMNS": "150", "LINES": "40", "TERM": "xterm-256color"}
    try:
        for _ in range(count):
            master, slave = pty.openpty()
            command = [*MEMGUARD, "status", "--socket", sock, "--interval", interval]
            started.append(
                subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env)
            )
            os.close(slave)
            masters.append(master)
            threading.Thread(target=_drain, args=(master,), daemon=True).start()
        yield started
    finally:
        for process in started:
            process.send_signal(signal.SIGINT)
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for master in masters:
            os.close(master)


def _drain(master: int) -> None:
    try:
        while os.read(master, 65536):
            pass
    except OSError:
        pass  # the viewer ended (EIO) or the master was closed


def phase(pid: int, seconds: float) -> dict[str, float]:
    cpu0, sw0, t0 = cpu_s(pid), switches(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, sw1, t1 = cpu_s(pid), switches(pid), time.monotonic()
    wall = t1 - t0
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_percent": round(100 * (cpu1 - cpu0) / wall, 3),
        "switches_per_s": round((sw1 - sw0) / wall, 1),
    }


def page_figures(source: Source, samples: int = 20) -> dict[str, float]:
    """Size of the page and one request's round trip (client side), median."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        source.fetch()
        times.append(time.perf_counter() - started)
        time.sleep(0.55)  # past the page's 0.5 s: each request builds a page
    size = len(json.dumps(source.fetch(), separators=(",", ":")))
    return {"page_bytes": size, "request_ms_median": round(1000 * sorted(times)[samples // 2], 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="memguard-status-cost-")
    root, sock = os.path.join(workdir, "tree"), os.path.join(workdir, "status.sock")
    tree.build(root, pods(args.containers))
    log = open(os.path.join(workdir, "agent.log"), "wb")  # noqa: SIM115 - closed below
    agent = subprocess.Popen(
        [*MEMGUARD, "run", "--parent", root, "--policy", "noop", "--kubernetes", "off",
         "--status-socket", sock, "--priority", "off"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    results: dict[str, Any] = {"containers": args.containers, "phase_s": args.phase_s}
    try:
        source = Source(sock, unix=True)
        wait_armed(source, args.containers)
        time.sleep(2.0)  # the start's own work (first scans) settles
        results.update(page_figures(source))
        rounds = []
        for _ in range(args.rounds):
            measured = {"idle": phase(agent.pid, args.phase_s)}
            with viewers(sock, 1, "1s"):
                measured["viewer"] = phase(agent.pid, args.phase_s)
            with viewers(sock, args.crowd, args.crowd_interval):
                measured["crowd"] = phase(agent.pid, args.phase_s)
            rounds.append(measured)
            print(json.dumps(measured), flush=True)
        results["rounds"] = rounds
        results["crowd"] = {"viewers": args.crowd, "interval": args.crowd_interval}
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        log.close()
        tree.clean(root)
        shutil.rmtree(workdir)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--phase-s", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--crowd", type=int, default=10)
    parser.add_argument("--crowd-interval", default="100ms")
    args = parser.parse_args()
    results = run(args)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "status_cost.json"), "w") as file:
        json.dump(results, file, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
