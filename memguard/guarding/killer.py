"""Kills, first and fast: signal before reading anything about the victims.

A guard prepares in advance (Prepared): the cgroup's members, which of them
may never be killed (pid 1, memguard, oom_score_adj -1000), and - once usage
is near the threshold - pidfds for the victims, biggest oom_score first (the
process policy's victim; a container kill signals the memory hog first). At
the kill the first SIGKILL goes to a prepared pidfd (or, not prepared, to the
pids of one cgroup.procs read) before anything else is read;
names, scores and sizes for the report are gathered after the signals.

A container kill then reads cgroup.procs again until it is empty: new pids (a
fork bomb forks faster than it is read) are signalled round after round, and
on cgroup v1 the freezer mirror (freeze, kill every member, thaw - how runc
kills a v1 container) stops them from forking at all. cgroup v2 has cgroup.kill.
Unknown pids are spared only when the last scan found a protected member
(children inherit oom_score_adj; lowering it to -1000 needs CAP_SYS_RESOURCE).
Without a pidfd (refused, or a pid read a moment ago) kill(2) is used: the pid
was a member microseconds before; under the freezer it cannot be reused at all.
A prepared victim without a pidfd (pidfd_open refused: memguard.kernel.pidfd)
is signalled only if it is in cgroup.procs read at the kill (once per kill, when
the first such victim is signalled): a prepared pid that left the cgroup may
name another process by now. Refusals are decided once, said once (WARNING).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field

import trio

from memguard.backends.base import Backend
from memguard.kernel import freezer
from memguard.kernel.pidfd import (
    PIDFD_OPEN,
    PIDFD_SEND_SIGNAL,
    PROCESS_MRELEASE,
    PidfdSupport,
    Process,
)
from memguard.kernel.procfs import read_oom_score_adj, read_proc, read_procs_info
from memguard.kernel.sched import RealtimeBurst
from memguard.policy.model import ProcInfo
from memguard.policy.victim import OOM_SCORE_ADJ_MIN, is_protected, ranked
from memguard.reports.report import Victim

log = logging.getLogger(__name__)

VICTIM_EXIT_WAIT_S = 0.5
MAX_PREPARED_PIDFDS = 512  # per guard: a bigger container is signalled by pid
FREEZE_WAIT_S = 0.2  # a task stuck in a syscall may take this long to freeze
DYING_POLL_S = 0.002  # signalled members take a moment to leave cgroup.procs


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


@dataclass
class Prepared:
    """A cgroup's members as of `at_s` (perf_counter), ready to be killed."""

    members: tuple[int, ...]
    protected: frozenset[int]  # never to be killed
    info: dict[int, ProcInfo] = field(default_factory=dict)  # ranked policy data
    victims: dict[int, Process] = field(default_factory=dict)  # pidfds (or pids), best first
    at_s: float = 0.0

    @property
    def armed(self) -> bool:
        """pidfds are open: the kill needs no read at all."""
        return bool(self.victims)

    def close(self) -> None:
        for process in self.victims.values():
            process.close()
        self.victims.clear()


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


def _send(process: Process) -> bool:
    """SIGKILL, then reap its memory at once (process_mrelease) where possible."""
    if not process.send_signal(signal.SIGKILL):
        return False
    _release(process)
    return True


def _release(process: Process) -> None:
    """process_mrelease: a killed process's memory is freed now, not at its exit.
    It takes time (~25 us per MiB): a container's victims are all signalled first."""
    with contextlib.suppress(Exception):
        process.mrelease()


# What memguard does instead when a pidfd syscall is refused (logged once).
INSTEAD = {
    PIDFD_OPEN: "kills go by pid with kill(2), each only if the pid is still in the "
    "cgroup's cgroup.procs read at the kill (a pid that left may name another process "
    "by now); process_mrelease is not used (it needs a pidfd)",
    PIDFD_SEND_SIGNAL: "kills go by pid with kill(2), each only while the process's "
    "pidfd shows it alive (so the pid still names it)",
    PROCESS_MRELEASE: "a killed process's memory is freed by its own exit, not reaped at once",
}


def _say_refused(syscall: str, code: int) -> None:
    log.warning(
        "kill path: %s is refused (%s: a seccomp profile without it, as older container "
        "runtimes' defaults are, or an older kernel): %s",
        syscall,
        errno.errorcode.get(code, str(code)),
        INSTEAD[syscall],
    )


class _Members:
    """A cgroup's members, read once, when a victim without a pidfd is about to be
    signalled (at the kill, not at the preparation)."""

    def __init__(self, backend: Backend, cgroup_dir: str) -> None:
        self._backend = backend
        self._cgroup_dir = cgroup_dir
        self._pids: frozenset[int] | None = None

    def contain(self, pid: int) -> bool:
        if self._pids is None:
            self._pids = frozenset(self._backend.pids(self._cgroup_dir) or ())
        return pid in self._pids


def _say_no_realtime(error: OSError) -> None:
    log.warning(
        "kill path: SCHED_FIFO is refused (%s: needs CAP_SYS_NICE or RLIMIT_RTPRIO, and RT "
        "runtime in memguard's CPU cgroup where RT group scheduling is on): a container "
        "kill's signals compete for the CPU with the members already dying, so a big "
        "container takes longer to signal",
        errno.errorcode.get(error.errno or 0, str(error.errno)),
    )


def _kill_pid(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class Killer:
    def __init__(self, backend: Backend, protected_pids: frozenset[int], dry_run: bool) -> None:
        self._backend = backend
        self._protected = protected_pids
        self._dry_run = dry_run
        self.pidfds = PidfdSupport(on_refused=_say_refused)
        self.burst = RealtimeBurst(on_refused=_say_no_realtime)

    # -- preparing ---------------------------------------------------------------------

    def scan(self, cgroup_dir: str) -> Prepared | None:
        """Members and the protected ones among them (one small read per member);
        None when the cgroup is gone. Blocking reads: call it off the trio thread."""
        pids = self._backend.pids(cgroup_dir)
        if pids is None:
            return None
        protected = {pid for pid in pids if pid in self._protected or pid == 1}
        for pid in pids:
            adj = read_oom_score_adj(pid)
            if adj is not None and adj <= OOM_SCORE_ADJ_MIN:
                protected.add(pid)
        return Prepared(tuple(pids), frozenset(protected), at_s=time.perf_counter())

    def prepare(self, cgroup_dir: str) -> Prepared | None:
        """A scan plus what the report needs and pidfds of the victims, biggest
        oom_score first: the process policy's victim, and the order a container
        kill signals in (the memory hog first, not pid order). Blocking reads:
        off the trio thread."""
        pids = self._backend.pids(cgroup_dir)
        if pids is None:
            return None
        infos = {info.pid: info for info in read_procs_info(pids)}
        protected = frozenset(
            pid for pid, info in infos.items() if is_protected(info, self._protected)
        ) | (self._protected & set(pids))
        prepared = Prepared(tuple(pids), protected, infos, {}, time.perf_counter())
        order = [info.pid for info in ranked(infos.values(), self._protected)]
        members = _Members(self._backend, cgroup_dir)
        for pid in order[:MAX_PREPARED_PIDFDS]:
            process = self.pidfds.open(pid, members.contain)
            if process is not None:
                prepared.victims[pid] = process
        return prepared

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
        members = _Members(self._backend, cgroup_dir)
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
                if _send(process):
                    await _wait_exits([process], trio.current_time() + VICTIM_EXIT_WAIT_S)
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
            if not _send(process):
                return None
            await _wait_exits([process], trio.current_time() + VICTIM_EXIT_WAIT_S)
        return KillOutcome((_victim(candidate.pid, candidate, True),), first_signal_at=signalled_at)

    # -- the container policy ----------------------------------------------------------

    async def kill_container(
        self, cgroup_dir: str, prepared: Prepared | None, deadline_s: float
    ) -> KillOutcome:
        """SIGKILL every member that may be killed, signals first, until none is left."""
        if self._dry_run:
            return self._would_kill(cgroup_dir, prepared)
        run = _ContainerKill(self, cgroup_dir, prepared)
        gone = not await run.execute(deadline_s)
        await _wait_exits(list(run.processes), deadline_s)
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

    def protected_among(self, pids: list[int], prepared: Prepared | None) -> set[int]:
        """Which of pids to spare: known protected ones; unknown ones are read only
        when the last scan found a protected member (they may have inherited it)."""
        known = prepared.protected if prepared is not None else frozenset()
        spare = {pid for pid in pids if pid in known or pid in self._protected or pid == 1}
        if prepared is not None and not prepared.protected:
            return spare
        known_members = set(prepared.members) if prepared is not None else set()
        for pid in pids:
            if pid in spare or pid in known_members:
                continue
            adj = read_oom_score_adj(pid)
            if adj is not None and adj <= OOM_SCORE_ADJ_MIN:
                spare.add(pid)
        return spare

    @property
    def backend(self) -> Backend:
        return self._backend


class _ContainerKill:
    """One container kill: prepared pidfds, then rounds of cgroup.procs, then the
    freezer (v1) or cgroup.kill (v2) for what keeps coming."""

    def __init__(self, killer: Killer, cgroup_dir: str, prepared: Prepared | None) -> None:
        self.killer = killer
        self.cgroup_dir = cgroup_dir
        self.prepared = prepared
        self.signalled: list[int] = []
        self.spared: set[int] = set()
        self.processes: list[Process] = []  # pidfds kept to wait for the exits
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.rounds = 0
        self.froze = False
        self.cgroup_kill = False
        self.realtime = False

    def _mark(self) -> None:
        now = time.perf_counter()
        self.first_at = self.first_at or now
        self.last_at = now

    def _signal_prepared(self) -> None:
        prepared = self.prepared
        if prepared is None:
            return
        for pid, process in prepared.victims.items():
            self._mark()
            if process.send_signal(signal.SIGKILL):
                self.signalled.append(pid)
                self.processes.append(process)
        prepared.victims.clear()  # handed over: closed when the kill ends

    def _signal_round(self, pids: list[int]) -> int:
        """Signal the members not signalled yet; how many were new."""
        done = set(self.signalled) | self.spared
        fresh = [pid for pid in pids if pid not in done]
        self.spared |= self.killer.protected_among(fresh, self.prepared)
        count = 0
        for pid in fresh:
            if pid in self.spared:
                continue
            self._mark()
            if _kill_pid(pid):
                self.signalled.append(pid)
                count += 1
        return count

    async def execute(self, deadline_s: float) -> bool:
        """Kill until no member may be left alive; False when the cgroup is gone."""
        backend = self.killer.backend
        done: bool | None = None
        with self.killer.burst as realtime:  # the dying wait until all are signalled
            self.realtime = realtime
            self._signal_prepared()
            if not self.spared and (self.prepared is None or not self.prepared.protected):
                self._mark()
                done = backend.kill_all(self.cgroup_dir)  # v2 cgroup.kill: all at once
        if done is not None:
            if not done:
                return False
            self.cgroup_kill = True
            for process in self.processes:
                _release(process)
            before = self.prepared.members if self.prepared is not None else ()
            members = backend.pids(self.cgroup_dir) or []  # those not gone already
            self.signalled += [
                p for p in dict.fromkeys([*before, *members]) if p not in self.signalled
            ]
            # on to the rounds: they wait for the dying to leave (and would
            # signal any newcomer, though cgroup.kill leaves none)
        known = set(self.prepared.members) if self.prepared is not None else None
        released = False
        with trio.move_on_at(deadline_s):
            while True:
                pids = backend.pids(self.cgroup_dir)
                if pids is None:
                    return False
                if not [pid for pid in pids if pid not in self.spared]:
                    return True
                # members the preparation did not know: it forks, so freeze it too
                forking = known is not None and not known.issuperset(pids)
                with self.killer.burst:
                    fresh = self._signal_round(pids)
                self.rounds += 1 if fresh else 0
                if not released:  # every member signalled once: now free their memory
                    released = True
                    for process in self.processes:
                        _release(process)
                if fresh and not self.froze and (self.rounds >= 2 or forking):
                    await self._freeze_and_kill()
                # the signalled are dying: look again soon, without spinning
                await trio.sleep(0 if fresh else DYING_POLL_S)
        return True

    async def _freeze_and_kill(self) -> None:
        """New members keep coming (a fork bomb): freeze them, kill all, thaw."""
        frozen = self.killer.backend.freezer_for(self.cgroup_dir)
        if frozen is None:
            return
        if not await trio.to_thread.run_sync(freezer.freeze, frozen):
            return
        try:
            with trio.move_on_after(FREEZE_WAIT_S):
                while freezer.state(frozen) != freezer.FROZEN:  # noqa: ASYNC110 - no event
                    await trio.sleep(0.001)
            members = freezer.members(frozen) or []
            if set(members) == set(self.killer.backend.pids(self.cgroup_dir) or ()):
                with self.killer.burst:
                    self._signal_round(members)  # the same container: safe by pid, frozen
                self.froze = True
        finally:
            await trio.to_thread.run_sync(freezer.thaw, frozen)


async def _wait_exits(processes: list[Process], deadline_s: float) -> None:
    with trio.move_on_at(deadline_s):
        for process in processes:
            await process.wait_exit()
