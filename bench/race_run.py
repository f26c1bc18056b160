"""The race benchmark's run: the matrix of cells, the trials of each cell, the results.

Within a cell every agent is started first (memguard once per cell), then the
trials are interleaved: round r runs every agent once, in an order rotated by
r. An agent that fails (did not start, did not arm, died) sits out the rest of
the cell and the failure is reported with the results. On a busy node one
spinning process per CPU runs for the whole cell.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Sequence

import trio

from bench import race_report
from bench.race_agents import Agent, AgentError, NoAgent, RefAgent
from bench.race_build import Programs, build
from bench.race_cgroups import Cgroups
from bench.race_cgroups_v1 import V1Cgroups
from bench.race_cgroups_v2 import V2Cgroups
from bench.race_memguard import MemguardAgent, hold_supported
from bench.race_procs import LineReader, Process, Processes
from bench.race_trial import Cell, TrialResult, Trials
from bench.race_workloads import LIMIT_MIB, Workload, Workloads
from memguard.policy.margin import threshold_bytes
from testing.agents import make_settings

RATES_MIB_S = {"100MiB/s": 100.0, "1GiB/s": 1024.0, "max": 0.0}
NODES = ("idle", "busy")
AGENTS = ("none", "c-ref", "memguard", "memguard-hold")
CALIBRATION_RUNS = 5
MIB = 1 << 20


def matrix(args: argparse.Namespace) -> list[Cell]:
    return [
        Cell(rate, RATES_MIB_S[rate], Workload(workload), node == "busy")
        for node in args.nodes
        for rate in args.rates
        for workload in args.workloads
    ]


def rotated(agents: Sequence[Agent], round_index: int) -> list[Agent]:
    shift = round_index % len(agents)
    return [*agents[shift:], *agents[:shift]]


async def top_rate_gib_s(programs: Programs, processes: Processes) -> float:
    """How fast the hog alone touches 128 MiB (no limit, no agent): the "max" rate."""
    rates = []
    for _ in range(CALIBRATION_RUNS + 1):  # the first one warms up fresh pages
        argv = [programs.hog, "0", str(LIMIT_MIB)]
        hog = processes.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert hog.stdin is not None
        assert hog.stdout is not None
        hog.stdin.write(b"g")
        hog.stdin.close()
        line = await LineReader(hog.stdout).line(60.0)
        processes.stop(hog)
        if line is None or not line.startswith("filled"):
            raise RuntimeError(f"the hog did not report its fill time: {line!r}")
        rates.append(LIMIT_MIB / 1024 / (int(line.split()[4]) / 1e9))
    return round(statistics.median(rates[1:]), 2)


class Race:
    """One run: the agents, the trials and their results, the busy node's spinners."""

    def __init__(self, args: argparse.Namespace, work_dir: str) -> None:
        self.args = args
        self.programs = build(work_dir)
        self.processes = Processes()
        self.cgroups: Cgroups = V1Cgroups() if args.cgroup_version == 1 else V2Cgroups()
        scratch = args.scratch_dir or work_dir
        self.workloads = Workloads(self.programs, self.cgroups, self.processes, scratch)
        self.trials = Trials(self.cgroups, self.workloads, self.processes)
        self.results: list[TrialResult] = []
        self.skipped: dict[str, str] = {}
        self.failures: list[str] = []
        limit_threshold = threshold_bytes(LIMIT_MIB * MIB, make_settings())
        assert limit_threshold is not None
        self.threshold_bytes = limit_threshold
        self.agents = self._agents()

    def _agents(self) -> list[Agent]:
        log_dir = os.path.join(self.args.results_dir, f"race-logs-v{self.cgroups.version}")
        os.makedirs(log_dir, exist_ok=True)
        hold_flags = shlex.split(self.args.hold_flags)
        ref = self.programs.ref_agent if self.cgroups.version == 1 else self.programs.ref_agent_v2
        made: dict[str, Agent] = {
            "none": NoAgent(),
            "c-ref": RefAgent(ref, self.threshold_bytes, self.processes, self.cgroups),
            "memguard": MemguardAgent("memguard", [], self.processes, self.cgroups, log_dir),
            "memguard-hold": MemguardAgent(
                "memguard-hold", hold_flags, self.processes, self.cgroups, log_dir
            ),
        }
        if "memguard-hold" in self.args.agents:
            why = hold_supported(hold_flags)
            if why is not None:
                self.skipped["memguard-hold"] = f"{why} (not built yet?)"
        return [made[name] for name in self.args.agents if name not in self.skipped]

    async def run(self) -> None:
        """The whole matrix; race.json after every cell, BENCHMARKS.md at the end."""
        top_rate = await top_rate_gib_s(self.programs, self.processes)
        print(f"top fill rate {top_rate} GiB/s; threshold {self.threshold_bytes} bytes", flush=True)
        for name, why in self.skipped.items():
            print(f"skipped {name}: {why}", flush=True)
        head = race_report.head(self.args, self.cgroups.version, self.agents, top_rate)
        head.update(skipped=self.skipped, threshold_bytes=self.threshold_bytes)
        version = self.cgroups.version
        json_path = os.path.join(self.args.results_dir, race_report.json_name(version))
        for cell in matrix(self.args):
            await self.run_cell(cell)
            head["failures"] = self.failures
            race_report.write_json(json_path, head, self.results)
        if not self.args.inside_vm:  # the host writes the v2 section from the VM's JSON
            race_report.publish(head, self.results)

    async def run_cell(self, cell: Cell) -> None:
        spinners = self._spin() if cell.busy else []
        agents: list[Agent] = []
        try:
            for agent in self.agents:
                if await self._attempt(agent, cell, agent.start_cell(cell.label, cell.busy)):
                    agents.append(agent)
            for index in range(self.args.trials):
                for agent in rotated(agents, index):
                    if agent in agents:
                        await self._trial(agent, cell, index, agents)
        finally:
            for agent in agents:
                agent.stop_cell()
            for spinner in spinners:
                self.processes.stop(spinner)

    async def _trial(self, agent: Agent, cell: Cell, index: int, agents: list[Agent]) -> None:
        """One trial; an agent that fails (did not arm, died) sits out the rest of the cell."""
        try:
            result = await self.trials.run(agent, cell, index)
        except AgentError as error:
            self._failed(agent, cell, error)
            agents.remove(agent)
            agent.stop_cell()
            return
        self.results.append(result)
        _progress(cell, result)

    async def _attempt(self, agent: Agent, cell: Cell, starting: Awaitable[None]) -> bool:
        try:
            await starting
        except AgentError as error:
            self._failed(agent, cell, error)
            agent.stop_cell()
            return False
        return True

    def _failed(self, agent: Agent, cell: Cell, error: AgentError) -> None:
        message = f"{cell.label}: {agent.name} failed, sits out the rest of the cell: {error}"
        self.failures.append(message)
        print(message, file=sys.stderr, flush=True)

    def _spin(self) -> list[Process]:
        """One busy loop per CPU, outside the container and outside the agents' cgroups."""
        loop = ["/bin/sh", "-c", "while :; do :; done"]
        return [self.processes.start(loop) for _ in range(len(os.sched_getaffinity(0)))]

    def close(self) -> None:
        self.processes.stop_all()
        self.cgroups.close()
        self.processes.reap_orphans()


def _progress(cell: Cell, result: TrialResult) -> None:
    latency = "" if result.latency_s is None else f" {result.latency_s * 1000:.3f} ms"
    print(
        f"{cell.label} #{result.index} {result.agent}: {result.winner} won "
        f"(watched {result.watched_exit}, oom_kill {result.oom_kills}){latency} "
        + " ".join(result.notes),
        file=sys.stderr,
        flush=True,
    )


async def run_until_sigterm(race: Race) -> bool:
    """race.run(), cancelled (every trial cleaning up after itself) by SIGTERM; whether
    it ran to the end. (Ctrl-C is trio's KeyboardInterrupt: the same clean-ups run.)"""
    finished = False
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_sigterm() -> None:
                async for _ in signals:
                    print("race: SIGTERM: stopping after cleaning up", file=sys.stderr)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_sigterm)
            await race.run()
            finished = True
            nursery.cancel_scope.cancel()
    return finished
