"""Kills, first and fast: signal before reading anything about the victims.

A guard prepares in advance (memguard.guarding.prepared): the cgroup's
members, the protected ones, and - near the threshold - pidfds for the victims.
At the kill the first SIGKILL goes to a prepared pidfd (or, not prepared, to
the pids of one cgroup.procs read) before anything else is read; names, scores
and sizes for the report are gathered after the signals. A container kill goes
on until cgroup.procs is empty (memguard.guarding.containerkill); without a
pidfd kill(2) is used, by the rules of memguard.guarding.signalling.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import trio

from memguard.backends.base import Backend
from memguard.guarding.containerkill import ContainerKill, wait_exits
from memguard.guarding.prepared import Prepared, prepare_victims, scan_members
from memguard.guarding.signalling import Members, say_no_realtime, say_refused, send
from memguard.kernel.pidfd import PidfdSupport, Process
from memguard.kernel.procfs import read_proc, read_procs_info
from memguard.kernel.sched import RealtimeBurst
from memguard.policy.model import ProcInfo
from memguard.policy.victim import is_protected, ranked
from memguard.reports.report import Victim

__all__ = ["KillOutcome", "Killer", "Prepared"]

VICTIM_EXIT_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class KillOutcome:
    victims: tuple[Victim, ...] = ()
    survivors: int = 0  # members left that memguard may not or could not kill
    gone: bool = False
    # perf_counter() as the first SIGKILL was issued (syscall entry: the return
    # can come much later, when the woken victim preempts memguard to exit).
    first_signal_at: float | None = None
    signalled_within_s: float | None = None  # first to last signal of a container kill
    rounds: int = 0  # cgroup.procs reads that found members to signal (container kill)
    froze: bool = False  # the v1 freezer stopped it forking (container kill)
    # cgroup v2 cgroup.kill: every member signalled at once (the victims listed are
    # those memguard knew of or still saw dying: exited ones leave cgroup.procs)
    cgroup_kill: bool = False
    realtime: bool = False  # signalled in SCHED_FIFO (the dying could not preempt it)

    def details(self) -> dict[str, str]:
        """A container kill's figures for its report (Report.extra)."""
        extra: dict[str, str] = {}
        if self.signalled_within_s is not None:
            extra["signalled_within_ms"] = f"{self.signalled_within_s * 1000:.3f}"
        if self.rounds:
            extra["kill_rounds"] = str(self.rounds)
        if self.froze:
            extra["froze"] = "true"
        if self.cgroup_kill:
            extra["cgroup_kill"] = "true"
        if self.realtime:
            extra["realtime"] = "true"
        return extra


def _victim(pid: int, info: ProcInfo | None, killed: bool) -> Victim:
    if info is None:
        return Victim(pid, _comm(pid), -1, 0, killed)
    return Victim(pid, info.comm, info.oom_score, info.rss_bytes, killed)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as file:
            return file.read().decode("utf-8", "replace").strip() or "?"
    except OSError:
        return "?"


class Killer:
    def __init__(self, backend: Backend, protected_pids: frozenset[int], dry_run: bool) -> None:
        self._backend = backend
        self._protected = protected_pids
        self._dry_run = dry_run
        self.pidfds = PidfdSupport(on_refused=say_refused)
        self.burst = RealtimeBurst(on_refused=say_no_realtime)

    # -- preparing ---------------------------------------------------------------------

    def scan(self, cgroup_dir: str) -> Prepared | None:
        """Members and the protected ones among them (one small read per member);
        None when the cgroup is gone. Blocking reads: call it off the trio thread."""
        return scan_members(self._backend, self._protected, cgroup_dir)

    def prepare(self, cgroup_dir: str) -> Prepared | None:
        """A scan plus what the report needs and pidfds of the victims, biggest
        oom_score first: the process policy's victim, and the order a container
        kill signals in (the memory hog first, not pid order). Blocking reads:
        off the trio thread."""
        return prepare_victims(self._backend, self._protected, self.pidfds, cgroup_dir)

    # -- the graceful policy's SIGTERM -------------------------------------------------

    def main_processes(self, cgroup_dir: str, prepared: Prepared | None) -> list[ProcInfo] | None:
        """The members whose parent is outside the cgroup - the container's main
        process (and `kubectl exec` sessions beside it) - oldest pid first, the
        protected ones (pid 1, memguard, oom_score_adj -1000) left out; None when
        the cgroup is gone. Prepared /proc readings are used where there are some;
        blocking reads otherwise: off the trio thread."""
        pids = self._backend.pids(cgroup_dir)
        if pids is None:
            return None
        members = set(pids)
        known = prepared.info if prepared is not None else {}
        infos = [known.get(pid) or read_proc(pid) for pid in pids]
        return sorted(
            (
                info
                for info in infos
                if info is not None
                and info.ppid not in members
                and not is_protected(info, self._protected)
            ),
            key=lambda info: info.pid,
        )

    def terminate(
        self, cgroup_dir: str, targets: list[ProcInfo]
    ) -> tuple[list[tuple[ProcInfo, Process]], float | None]:
        """SIGTERM each target through a pidfd (the fallback rules of
        memguard.kernel.pidfd apply); the signalled with their pidfds (to wait for
        their exits; the caller closes them) and when the first signal went."""
        members = Members(self._backend, cgroup_dir)
        opened = [(info, self.pidfds.open(info.pid, members.contain)) for info in targets]
        # With its pidfd open a pid cannot name another process: still a member now?
        current = set(self._backend.pids(cgroup_dir) or ())
        signalled: list[tuple[ProcInfo, Process]] = []
        first_at: float | None = None
        for info, process in opened:
            if process is None:
                continue
            if info.pid in current:
                first_at = first_at or time.perf_counter()
                if process.send_signal(signal.SIGTERM):
                    signalled.append((info, process))
                    continue
            process.close()
        return signalled, first_at

    # -- the process policy ------------------------------------------------------------

    async def kill_process(self, cgroup_dir: str, prepared: Prepared | None) -> KillOutcome:
        """SIGKILL the best-ranked member: a prepared pidfd at once, else rank now."""
        if prepared is not None and prepared.armed and not self._dry_run:
            for pid, process in prepared.victims.items():
                signalled_at = time.perf_counter()
                if send(process):
                    await wait_exits([process], trio.current_time() + VICTIM_EXIT_WAIT_S)
                    info = prepared.info.get(pid)
                    return KillOutcome((_victim(pid, info, True),), first_signal_at=signalled_at)
        members = self._backend.pids(cgroup_dir)
        if members is None:
            return KillOutcome(gone=True)
        infos = read_procs_info(members)
        for candidate in ranked(infos, self._protected):
            if self._dry_run:
                return KillOutcome(victims=(_victim(candidate.pid, candidate, killed=False),))
            outcome = await self._kill_checked(cgroup_dir, candidate)
            if outcome is not None:
                return outcome
        return KillOutcome(survivors=len(infos))

    async def _kill_checked(self, cgroup_dir: str, candidate: ProcInfo) -> KillOutcome | None:
        process = self.pidfds.open(candidate.pid)
        if process is None:
            return None
        with process:
            if candidate.pid not in (self._backend.pids(cgroup_dir) or ()):
                return None  # left the cgroup (or a new process took the pid)
            signalled_at = time.perf_counter()
            if not send(process):
                return None
            await wait_exits([process], trio.current_time() + VICTIM_EXIT_WAIT_S)
        return KillOutcome((_victim(candidate.pid, candidate, True),), first_signal_at=signalled_at)

    # -- the container policy ----------------------------------------------------------

    async def kill_container(
        self, cgroup_dir: str, prepared: Prepared | None, deadline_s: float
    ) -> KillOutcome:
        """SIGKILL every member that may be killed, signals first, until none is left."""
        if self._dry_run:
            return self._would_kill(cgroup_dir, prepared)
        run = ContainerKill(self._backend, self.burst, self._protected, cgroup_dir, prepared)
        gone = not await run.execute(deadline_s)
        await wait_exits(list(run.processes), deadline_s)
        for process in run.processes:
            process.close()
        left = [pid for pid in self._backend.pids(cgroup_dir) or () if pid not in run.spared]
        info = prepared.info if prepared is not None else {}
        victims = tuple(_victim(pid, info.get(pid), True) for pid in run.signalled)
        spread_s = None
        if run.first_at is not None and run.last_at is not None:
            spread_s = run.last_at - run.first_at
        survivors = len(left) + len(run.spared)
        return KillOutcome(
            victims,
            survivors,
            gone,
            run.first_at,
            spread_s,
            run.rounds,
            run.froze,
            run.cgroup_kill,
            run.realtime,
        )

    def _would_kill(self, cgroup_dir: str, prepared: Prepared | None) -> KillOutcome:
        members = self._backend.pids(cgroup_dir)
        if members is None:
            return KillOutcome(gone=True)
        scan = prepared or self.scan(cgroup_dir)
        protected = scan.protected if scan is not None else frozenset()
        info = scan.info if scan is not None else {}
        victims = tuple(_victim(p, info.get(p), False) for p in members if p not in protected)
        return KillOutcome(victims, survivors=len(members) - len(victims))
