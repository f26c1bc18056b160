"""The race benchmark's workloads, started inside a container cgroup.

Every process is started outside, moved into the container (memory, freezer,
pids), and only then told to go (one byte on stdin). The *watched* process is
the one whose death by SIGKILL means an agent acted: the hog, or the fork
bomb's first process.

- anon: the hog allocates and touches 1 MiB chunks at the cell's rate towards
  twice the limit (it never gets there: someone kills it).
- cache+anon: the hog first writes and fsyncs 20 MiB to a file (clean,
  reclaimable page cache charged to the container), then the same.
- 300procs+anon: 300 idle children of one parent, all forked before the hog
  starts; a container kill has to reach all 301 processes.
- forkbomb: every process allocates 4 MiB at the cell's rate (so the bomb as a
  whole fills faster than the rate) and forks every 20 ms; every child does the
  same, so the count doubles every 20 ms until the limit. Bounded: no fork
  after 10 s, every process exits then; pids.max 4096 on the container; the
  bench freezes and kills whatever is left after the trial.
"""

from __future__ import annotations

import enum
import os
import subprocess
import uuid
from dataclasses import dataclass, field

from bench.race_build import Programs
from bench.race_cgroups import Cgroups, Container
from bench.race_procs import LineReader, Process, Processes

LIMIT_MIB = 128
TARGET_MIB = 2 * LIMIT_MIB
CACHE_MIB = 20
IDLE_PROCESSES = 300
BOMB_CHILD_MIB = 4
BOMB_FORK_INTERVAL_MS = 20
BOMB_LIFETIME_S = 10
READY_TIMEOUT_S = 30.0


class Workload(enum.StrEnum):
    ANON = "anon"
    CACHE = "cache+anon"
    PROCS = "300procs+anon"
    FORKBOMB = "forkbomb"


@dataclass
class Running:
    """A started workload: the watched process and everything to clean up."""

    watched: Process
    processes: list[Process] = field(default_factory=list)
    cache_file: str | None = None


class Workloads:
    def __init__(
        self, programs: Programs, cgroups: Cgroups, processes: Processes, scratch_dir: str
    ) -> None:
        self._programs = programs
        self._cgroups = cgroups
        self._processes = processes
        self._scratch_dir = scratch_dir

    async def start(self, workload: Workload, rate_mib_s: float, container: Container) -> Running:
        """Start workload in container; it is running (allocating) when this returns."""
        rate = f"{rate_mib_s:g}"
        if workload is Workload.FORKBOMB:
            argv = [self._programs.forkbomb, rate, str(BOMB_CHILD_MIB)]
            argv += [str(BOMB_FORK_INTERVAL_MS), str(BOMB_LIFETIME_S)]
            bomb = self._spawn(argv, container)
            return self._go(Running(bomb, [bomb]))
        idle: list[Process] = []
        if workload is Workload.PROCS:
            idle = [await self._idle_processes(container)]
        hog_argv = [self._programs.hog, rate, str(TARGET_MIB)]
        cache_file = None
        if workload is Workload.CACHE:
            cache_file = os.path.join(self._scratch_dir, f"cache-{uuid.uuid4().hex[:8]}")
            hog_argv += [str(CACHE_MIB), cache_file]
        hog = self._spawn(hog_argv, container)
        return self._go(Running(hog, [*idle, hog], cache_file))

    def stop(self, running: Running) -> None:
        """Stop (by pid) whatever is left of it and remove its file."""
        for process in running.processes:
            self._processes.stop(process)
        if running.cache_file is not None and os.path.exists(running.cache_file):
            os.unlink(running.cache_file)

    async def _idle_processes(self, container: Container) -> Process:
        parent = self._spawn([self._programs.sleepers, str(IDLE_PROCESSES)], container, True)
        _say_go(parent)
        assert parent.stdout is not None
        line = await LineReader(parent.stdout).line(READY_TIMEOUT_S)
        if line != "ready":
            self._processes.stop(parent)
            raise RuntimeError(f"{IDLE_PROCESSES} idle processes not forked: {line!r}")
        return parent

    def _spawn(self, argv: list[str], container: Container, read: bool = False) -> Process:
        stdout = subprocess.PIPE if read else subprocess.DEVNULL
        process = self._processes.start(argv, stdin=subprocess.PIPE, stdout=stdout)
        self._cgroups.join(container, process.pid)
        return process

    def _go(self, running: Running) -> Running:
        _say_go(running.watched)
        return running


def _say_go(process: Process) -> None:
    assert process.stdin is not None
    process.stdin.write(b"g")
    process.stdin.close()
