"""One trial of the race: one agent, one container, one workload, one outcome.

The trial ends when the watched process dies, when the kernel has OOM-killed
in the container (the bench has its own OOM notification on it - v1 an
eventfd, v2 inotify on memory.events - so nothing polls while the race runs;
the notification comes before the kill, so after it the bench reads oom_kill
until it moves or a moment has passed: an OOM notification without a kill is a
close call the agent still won), or after a timeout.

Who won: the kernel, if the container's oom_kill counter (v1 memory.oom_control,
v2 memory.events) is non-zero
by the end of the trial (after the agent's kill has emptied the container, or
2 s); else the agent, if the watched process died of SIGKILL; else nobody.
Everything the trial made is removed before the next one starts.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import trio

from bench.race_agents import Agent, AgentTrial
from bench.race_cgroups import Cgroups, Container, OomWatch
from bench.race_procs import Processes
from bench.race_workloads import LIMIT_MIB, Running, Workload, Workloads
from memguard.kernel.pidfd import PidFd

MIB = 1 << 20
TRIAL_TIMEOUT_S = 20.0  # the slowest fill (100 MiB/s) reaches the limit in 1.3 s
OOM_KILL_WAIT_S = 0.5  # after an OOM notification, how long to wait for oom_kill to move
EMPTY_BOUND_S = 2.0  # an agent's container kill gets this long to empty the container
POLL_S = 0.002


@dataclass(frozen=True)
class Cell:
    rate: str  # "100MiB/s", "1GiB/s", "max"
    rate_mib_s: float  # 0: as fast as the CPU touches pages
    workload: Workload
    busy: bool

    @property
    def node(self) -> str:
        return "busy" if self.busy else "idle"

    @property
    def label(self) -> str:
        return f"{self.workload}-{self.rate.replace('/', '_')}-{self.node}"


@dataclass(frozen=True)
class TrialResult:
    agent: str
    rate: str
    workload: str
    node: str
    index: int
    winner: str  # kernel | agent | nobody
    oom_kills: int
    oom_notified: bool  # the kernel reached OOM in the container (killed or not)
    watched_exit: str  # SIGKILL, exit N, signal N, running
    go_to_end_s: float  # the hog told to go -> the trial's end
    emptied_s: float | None  # trial end -> container empty (agent won only)
    latency_s: float | None  # agent: eventfd wake -> first SIGKILL
    go_to_kill_s: float | None  # the hog told to go -> the agent's first SIGKILL
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Race:
    """The bench's side of a trial."""

    go_wall_s: float  # time.time() when the hog was told to go
    notified: bool  # the kernel said OOM in the container
    go_to_end_s: float
    emptied_s: float | None


class Trials:
    def __init__(self, cgroups: Cgroups, workloads: Workloads, processes: Processes) -> None:
        self._cgroups = cgroups
        self._workloads = workloads
        self._processes = processes

    async def run(self, agent: Agent, cell: Cell, index: int) -> TrialResult:
        container = self._cgroups.container(agent.name, LIMIT_MIB * MIB)
        running: Running | None = None
        try:
            await agent.arm(container)
            oom = self._cgroups.oom_watch(container)
            try:
                running = await self._workloads.start(cell.workload, cell.rate_mib_s, container)
                race = await self._race(running, oom, container)
            finally:
                oom.close()
            said = await agent.collect(container)
            code = running.watched.poll()
            oom_kills = self._cgroups.oom_kills(container)
            return _decide(agent.name, cell, index, race, said, code, oom_kills)
        finally:
            self._clean(agent, container, running)

    async def _race(self, running: Running, oom: OomWatch, container: Container) -> Race:
        go_s, go_wall_s = time.monotonic(), time.time()
        watched = PidFd.open(running.watched.pid)
        if watched is None:
            raise RuntimeError("the watched process was gone before the race started")
        with watched:
            notified = await self._wait_end(watched, oom, container)
            end_s = time.monotonic()
            emptied_s = await self._settle(watched, container, end_s)
        return Race(go_wall_s, notified, end_s - go_s, emptied_s)

    async def _wait_end(self, watched: PidFd, oom: OomWatch, container: Container) -> bool:
        """Park until the watched process dies or the kernel OOM-kills (or the timeout);
        whether the kernel said OOM."""
        notified = False

        async def kernel_killed(done: trio.CancelScope) -> None:
            nonlocal notified
            await oom.notified()
            notified = True
            with trio.move_on_after(OOM_KILL_WAIT_S):
                while self._cgroups.oom_kills(container) == 0:  # noqa: ASYNC110 - a counter
                    await trio.sleep(POLL_S)
                done.cancel()

        async def watched_died(done: trio.CancelScope) -> None:
            await watched.wait_exit()
            done.cancel()

        with trio.move_on_after(TRIAL_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kernel_killed, nursery.cancel_scope)
                nursery.start_soon(watched_died, nursery.cancel_scope)
        return notified

    async def _settle(self, watched: PidFd, container: Container, end_s: float) -> float | None:
        """After an agent's kill: how long the container took to empty (None: not within
        EMPTY_BOUND_S, or no agent kill to wait for)."""
        if not watched.has_exited() or self._cgroups.oom_kills(container) > 0:
            return None
        with trio.move_on_after(EMPTY_BOUND_S):
            while self._cgroups.members(container):  # noqa: ASYNC110 - no event for empty
                await trio.sleep(POLL_S)
            return time.monotonic() - end_s
        return None

    def _clean(self, agent: Agent, container: Container, running: Running | None) -> None:
        self._cgroups.kill_all(container)
        if running is not None:
            self._workloads.stop(running)
        agent.finish_trial()
        self._processes.reap_orphans()
        self._cgroups.remove(container)


def _decide(
    agent: str,
    cell: Cell,
    index: int,
    race: Race,
    said: AgentTrial,
    code: int | None,
    oom_kills: int,
) -> TrialResult:
    if oom_kills > 0:
        winner = "kernel"
    elif code == -signal.SIGKILL:
        winner = "agent"
    else:
        winner = "nobody"
    go_to_kill_s = None if said.kill_wall_s is None else said.kill_wall_s - race.go_wall_s
    return TrialResult(
        agent,
        cell.rate,
        str(cell.workload),
        cell.node,
        index,
        winner,
        oom_kills,
        race.notified,
        _exit_text(code),
        round(race.go_to_end_s, 6),
        None if race.emptied_s is None else round(race.emptied_s, 6),
        said.latency_s,
        None if go_to_kill_s is None else round(go_to_kill_s, 6),
        said.notes,
    )


def _exit_text(code: int | None) -> str:
    if code is None:
        return "running"
    if code == -signal.SIGKILL:
        return "SIGKILL"
    return f"signal {-code}" if code < 0 else f"exit {code}"
