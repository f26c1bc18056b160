"""Kill latency while the agent is disturbed, next to undisturbed (cgroup v1, root).

    .venv/bin/python -m bench.latency_faults [--runs 50] [--connections 1000]

One agent (process policy, in this process, its log through memguard's own
log handler into a pipe, its health endpoint on 127.0.0.1) guards a fresh
128 MiB container per trial; a hog fills it at 100 MiB/s. Trials rotate over
three conditions, interleaved so the machine's noise hits all alike:
- undisturbed: a thread reads the log pipe as fast as it comes;
- log-stall: the reader stops (the pipe and memguard's log queue fill);
- connections: another process holds --connections connections open to the
  health endpoint (re-opening those the endpoint closes) and a tenth of them
  trickle a request that never ends.
Latency is the agent's own wake -> SIGKILL (Report.latency_s); a trial where
the kernel's OOM killer acted first counts as lost.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time

import trio

from memguard.cli.logsetup import configure
from memguard.policy.model import MIB, Policy
from memguard.reports.http import HealthServer, bind
from memguard.reports.report import ReportKind
from testing.agents import make_config, reported, running_agent, wait_armed
from testing.cgroups import CgroupTree, new_tree

CONDITIONS = ("undisturbed", "log-stall", "connections")
RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
filler = logging.getLogger("bench.filler")
HOLDER = """
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
while True:
    held = [s for s in held if s.fileno() >= 0]
    while len(held) < count:
        s = socket.create_connection(("127.0.0.1", port))
        if len(held) % 10 == 0:
            s.sendall(b"GET /healthz HTTP/1.1\\r\\nX-Slow: ")
        s.setblocking(False)
        held.append(s)
    for s in held:
        try:
            if s.recv(1) == b"":
                s.close()
        except BlockingIOError:
            pass
    time.sleep(0.05)
"""


class LogPipe:
    """memguard's log into a 64 KiB pipe whose reader can be stopped."""

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 65536)
        self.stream = os.fdopen(write_fd, "w")
        self.reading = threading.Event()
        self.reading.set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            self.reading.wait()
            if not os.read(self.read_fd, 65536):
                return


def start_holder(port: int, connections: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(port), str(connections)])


def percentile_ms(values_s: list[float], share: float) -> float:
    ordered = sorted(values_s)
    return round(ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] * 1000, 3)


async def measure(
    tree: CgroupTree, runs: int, connections: int, log: LogPipe
) -> dict[str, dict[str, object]]:
    latencies: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    lost = dict.fromkeys(CONDITIONS, 0)
    config = make_config(tree.parent, policy=Policy.PROCESS, reserved_fds=1100)
    routes = {"/healthz": lambda: (200, "text/plain", b"ok\n")}
    server = HealthServer(await bind("127.0.0.1", 0), routes)
    async with running_agent(config) as (agent, collect), trio.open_nursery() as nursery:
        await nursery.start(server.run)
        for index in range(runs * len(CONDITIONS)):
            condition = CONDITIONS[index % len(CONDITIONS)]
            cgroup = tree.container(limit_bytes=128 * MIB, index=index)
            hog = tree.hog(cgroup, target_mib=256, rate_mib_s=100)
            await wait_armed(agent, cgroup)
            holder = None
            if condition == "log-stall":
                log.reading.clear()
                for _ in range(5000):  # fill the pipe and the log queue
                    filler.info("filler line %d %s", index, "x" * 80)
            elif condition == "connections":
                holder = start_holder(server.bound_port, connections)
                with trio.fail_after(60):
                    while server.open_connections < connections:  # noqa: ASYNC110 - another process
                        await trio.sleep(0.05)
            hog.go()
            await hog.exited()
            log.reading.set()
            if holder is not None:
                holder.kill()
                holder.wait()
            if tree.oom_kills(cgroup) > 0:
                lost[condition] += 1
            else:
                report = await reported(collect, cgroup, ReportKind.KILL_PROCESS)
                assert report.latency_s is not None
                latencies[condition].append(report.latency_s)
            tree.remove(cgroup)
        nursery.cancel_scope.cancel()
    return {
        name: {
            "trials": runs,
            "kernel_won": lost[name],
            "median_ms": percentile_ms(values, 0.5),
            "p99_ms": percentile_ms(values, 0.99),
            "max_ms": percentile_ms(values, 1.0),
            "mean_ms": round(statistics.mean(values) * 1000, 3),
        }
        for name, values in latencies.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="trials per condition")
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    log = LogPipe()
    configure("text", "info", log.stream)
    tree = new_tree()
    started = time.monotonic()
    try:
        result = trio.run(measure, tree, args.runs, args.connections, log)
    finally:
        tree.cleanup()
    output = {"conditions": result, "wall_s": round(time.monotonic() - started, 1)}
    output.update(cpus=os.cpu_count(), kernel=os.uname().release)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, "latency_faults.json"), "w") as file:
        json.dump(output, file, indent=1)
    print(json.dumps(output, indent=1))


if __name__ == "__main__":
    main()
