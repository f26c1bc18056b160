"""The contestants of the race benchmark, and how each is run and measured.

- none: no agent; the kernel's OOM killer always acts.
- c-ref: bench/c/ref_agent.c, started per trial on the trial's container with
  the threshold memguard computes for the same limit; it prints its wake time
  (right after poll(2)) and its first kill(2) time: latency = their difference.
- memguard, memguard-hold: `memguard run` (bench/race_memguard.py).

On a busy node each agent runs in its own 500m CPU cgroup: a small sh wrapper
writes its own pid there and execs the agent, so every thread it ever has is
inside from the start.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bench.race_cgroups import Cgroups, Container
from bench.race_procs import LineReader, Process, Processes

ARM_TIMEOUT_S = 60.0  # ms here; seconds in the TCG VM on a busy node
REPORT_TIMEOUT_S = 3.0  # an agent's word on a trial comes after its victims exit (bound 2 s)
REF_KILL_BOUND_MS = 2000  # as memguard's container kill (guarding/acting.py CONTAINER_KILL_BOUND_S)


class AgentError(RuntimeError):
    """An agent did not start, did not arm, or died: it sits out the rest of the cell."""


@dataclass(frozen=True)
class AgentTrial:
    """What an agent says about one trial."""

    latency_s: float | None = None  # wake -> first SIGKILL
    kill_wall_s: float | None = None  # time.time() of the first SIGKILL
    notes: tuple[str, ...] = ()


class Agent(Protocol):
    name: str

    async def start_cell(self, cell: str, busy: bool) -> None: ...

    async def arm(self, container: Container) -> None: ...

    async def collect(self, container: Container) -> AgentTrial: ...

    def finish_trial(self) -> None: ...

    def stop_cell(self) -> None: ...


def quota_wrapped(argv: Sequence[str], cpu_procs_file: str | None) -> list[str]:
    """argv, first moved into a CPU cgroup (by its own pid, before exec) when given."""
    if cpu_procs_file is None:
        return list(argv)
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', cpu_procs_file, *argv]


class NoAgent:
    name = "none"

    async def start_cell(self, cell: str, busy: bool) -> None:
        pass

    async def arm(self, container: Container) -> None:
        pass

    async def collect(self, container: Container) -> AgentTrial:
        return AgentTrial()

    def finish_trial(self) -> None:
        pass

    def stop_cell(self) -> None:
        pass


class RefAgent:
    """The C reference agent, one process per trial."""

    name = "c-ref"

    def __init__(
        self, program: str, threshold_bytes: int, processes: Processes, cgroups: Cgroups
    ) -> None:
        self._program = program
        self._threshold_bytes = threshold_bytes
        self._processes = processes
        self._cgroups = cgroups
        self._busy = False
        self._process: Process | None = None
        self._reader: LineReader | None = None

    async def start_cell(self, cell: str, busy: bool) -> None:
        self._busy = busy

    async def arm(self, container: Container) -> None:
        cpu = self._cgroups.cpu_procs_file(self.name) if self._busy else None
        argv = [self._program, container.memory, str(self._threshold_bytes)]
        argv.append(str(REF_KILL_BOUND_MS))
        self._process = self._processes.start(quota_wrapped(argv, cpu), stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        self._reader = LineReader(self._process.stdout)
        line = await self._reader.line(ARM_TIMEOUT_S)
        if line != "armed":
            raise AgentError(f"the C reference agent did not arm: {line!r}")

    async def collect(self, container: Container) -> AgentTrial:
        assert self._reader is not None
        line = await self._reader.line(REPORT_TIMEOUT_S)
        if line is None:
            return AgentTrial(notes=("no wake",))
        fields = dict(item.split("=", 1) for item in line.split())
        wake_ns, kill_ns = int(fields["wake_ns"]), int(fields["first_kill_ns"])
        notes = tuple(f"{key}={fields[key]}" for key in ("woke", "signals", "rounds", "empty"))
        if kill_ns == 0:
            return AgentTrial(notes=(*notes, "no kill"))
        wall_s = int(fields["first_kill_wall_ns"]) / 1e9
        return AgentTrial((kill_ns - wake_ns) / 1e9, wall_s, notes)

    def finish_trial(self) -> None:
        if self._process is not None:
            self._processes.stop(self._process)
        self._process, self._reader = None, None

    def stop_cell(self) -> None:
        self.finish_trial()
