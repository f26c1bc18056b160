"""Executing what the policy decided: flushes and kills (the I/O shell).

Flushes of real cgroups block in the kernel (force_empty), so they run in a
worker thread, at most `max_parallel` at once, never twice at once on one
cgroup, and the guard stops waiting after `timeout_s` (the thread finishes on
its own; the cgroup stays marked busy until it does).

Kills go through pidfds: open, re-check that the pid is still a member of the
cgroup (the pidfd pins the identity, so the pid cannot be recycled in between),
SIGKILL, then process_mrelease to free the memory at once. Never pid 1, never
memguard itself, never oom_score_adj -1000 (memguard.policy.victim).
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass

import trio

from memguard.backends.base import Backend
from memguard.components import Changes
from memguard.kernel.pidfd import Process, open_process
from memguard.kernel.procfs import read_procs_info
from memguard.policy.model import ProcInfo
from memguard.policy.victim import eligible, is_protected, ranked
from memguard.reports.report import Victim

CONTAINER_KILL_ROUNDS = 5
VICTIM_EXIT_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class FlushOutcome:
    completed: bool  # the flush finished within the bound
    gone: bool = False  # the cgroup vanished
    busy: bool = False  # a previous flush of this cgroup is still running
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class KillOutcome:
    victims: tuple[Victim, ...] = ()
    survivors: int = 0  # members left that memguard may not or could not kill
    gone: bool = False
    # perf_counter() as the first SIGKILL was issued (syscall entry: the return
    # can come much later, when the woken victim preempts memguard to exit).
    first_signal_at: float | None = None


class Flusher:
    def __init__(self, backend: Backend, timeout_s: float, max_parallel: int) -> None:
        self._backend = backend
        self._timeout_s = timeout_s
        self._limiter = trio.CapacityLimiter(max_parallel)
        self._busy: dict[str, trio.Event] = {}  # cgroup -> set when its flush returns
        self.changes = Changes()  # moves when a flush returns (an abandoned one too)

    def busy(self, cgroup_dir: str) -> bool:
        """A flush of cgroup_dir is running (an abandoned one included)."""
        return cgroup_dir in self._busy

    def _finished(self, cgroup_dir: str, done: trio.Event) -> None:
        if self._busy.get(cgroup_dir) is done:
            del self._busy[cgroup_dir]
        done.set()
        self.changes.notify()

    async def flush(self, cgroup_dir: str, request_bytes: int) -> FlushOutcome:
        if cgroup_dir in self._busy:
            return FlushOutcome(completed=False, busy=True)
        done = trio.Event()
        self._busy[cgroup_dir] = done
        started = time.perf_counter()
        if not self._backend.flush_blocks:
            try:
                present = self._backend.flush(cgroup_dir, request_bytes)
            finally:
                self._finished(cgroup_dir, done)
            return FlushOutcome(True, gone=not present, duration_s=time.perf_counter() - started)
        token = trio.lowlevel.current_trio_token()

        def flush_in_thread() -> bool:
            try:
                return self._backend.flush(cgroup_dir, request_bytes)
            finally:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._finished, cgroup_dir, done)

        present = True
        with trio.move_on_after(self._timeout_s) as scope:
            present = await trio.to_thread.run_sync(
                flush_in_thread, limiter=self._limiter, abandon_on_cancel=True
            )
        duration_s = time.perf_counter() - started
        return FlushOutcome(not scope.cancelled_caught, gone=not present, duration_s=duration_s)


def _victim(info: ProcInfo, killed: bool) -> Victim:
    return Victim(info.pid, info.comm, info.oom_score, info.rss_bytes, killed)


class Killer:
    def __init__(self, backend: Backend, protected_pids: frozenset[int], dry_run: bool) -> None:
        self._backend = backend
        self._protected = protected_pids
        self._dry_run = dry_run

    def _members(self, cgroup_dir: str) -> list[ProcInfo] | None:
        pids = self._backend.pids(cgroup_dir)
        return None if pids is None else read_procs_info(pids)

    async def kill_process(self, cgroup_dir: str) -> KillOutcome:
        """SIGKILL the member with the highest oom_score (the next if it vanished)."""
        members = self._members(cgroup_dir)
        if members is None:
            return KillOutcome(gone=True)
        for candidate in ranked(members, self._protected):
            if self._dry_run:
                return KillOutcome(victims=(_victim(candidate, killed=False),))
            outcome = await self._kill_one(cgroup_dir, candidate)
            if outcome is not None:
                return outcome
        return KillOutcome(survivors=len(members))

    async def _kill_one(self, cgroup_dir: str, candidate: ProcInfo) -> KillOutcome | None:
        pidfd = open_process(candidate.pid)
        if pidfd is None:
            return None
        with pidfd:
            if candidate.pid not in (self._backend.pids(cgroup_dir) or ()):
                return None  # left the cgroup (or a new process took the pid)
            signalled_at = time.perf_counter()
            if not pidfd.send_signal(signal.SIGKILL):
                return None
            pidfd.mrelease()
            # Give the exit a moment, so the report's "usage after" shows the effect.
            await _wait_exits([pidfd], trio.current_time() + VICTIM_EXIT_WAIT_S)
        return KillOutcome((_victim(candidate, True),), first_signal_at=signalled_at)

    async def kill_container(self, cgroup_dir: str, deadline_s: float) -> KillOutcome:
        """SIGKILL every member: at once (cgroup.kill) when none is protected, else
        one by one, round after round, until none is left or the deadline."""
        members = self._members(cgroup_dir)
        if members is None:
            return KillOutcome(gone=True)
        protected = any(is_protected(m, self._protected) for m in members)
        if not protected and not self._dry_run and members:
            outcome = await self._kill_all_at_once(cgroup_dir, members, deadline_s)
            if outcome is not None:
                return outcome
        return await self._kill_one_by_one(cgroup_dir, deadline_s)

    async def _kill_all_at_once(
        self, cgroup_dir: str, members: list[ProcInfo], deadline_s: float
    ) -> KillOutcome | None:
        pidfds = [pidfd for pidfd in map(open_process, (m.pid for m in members)) if pidfd]
        try:
            issued_at = time.perf_counter()
            done = self._backend.kill_all(cgroup_dir)
            if done is None:
                return None  # not supported (v1): one by one
            if not done:
                return KillOutcome(gone=True)
            for pidfd in pidfds:
                pidfd.mrelease()
            await _wait_exits(pidfds, deadline_s)
        finally:
            for pidfd in pidfds:
                pidfd.close()
        left = self._members(cgroup_dir) or []
        victims = tuple(_victim(m, True) for m in members)
        return KillOutcome(victims, len(left), first_signal_at=issued_at)

    async def _kill_one_by_one(self, cgroup_dir: str, deadline_s: float) -> KillOutcome:
        victims: dict[int, Victim] = {}
        first_signal_at: float | None = None
        members: list[ProcInfo] | None = []
        for _ in range(CONTAINER_KILL_ROUNDS):
            members = self._members(cgroup_dir)
            if members is None:
                break
            targets = eligible(members, self._protected)
            if not targets or self._dry_run:
                victims.update((t.pid, _victim(t, killed=False)) for t in targets)
                break
            signalled, signalled_at = self._signal_members(cgroup_dir, targets)
            first_signal_at = first_signal_at or signalled_at
            victims.update((info.pid, _victim(info, True)) for info, _ in signalled)
            await _wait_exits([pidfd for _, pidfd in signalled], deadline_s)
            for _, pidfd in signalled:
                pidfd.close()
        if members is None:
            return KillOutcome(tuple(victims.values()), gone=True, first_signal_at=first_signal_at)
        left = self._members(cgroup_dir) or []
        return KillOutcome(tuple(victims.values()), len(left), first_signal_at=first_signal_at)

    def _signal_members(
        self, cgroup_dir: str, targets: list[ProcInfo]
    ) -> tuple[list[tuple[ProcInfo, Process]], float | None]:
        opened = [(info, open_process(info.pid)) for info in targets]
        still_members = set(self._backend.pids(cgroup_dir) or [])
        signalled: list[tuple[ProcInfo, Process]] = []
        first_at: float | None = None
        for info, pidfd in opened:
            if pidfd is None:
                continue
            member = info.pid in still_members and not is_protected(info, self._protected)
            issued_at = time.perf_counter()
            if member and pidfd.send_signal(signal.SIGKILL):
                first_at = first_at or issued_at
                pidfd.mrelease()
                signalled.append((info, pidfd))
            else:
                pidfd.close()
        return signalled, first_at


async def _wait_exits(pidfds: list[Process], deadline_s: float) -> None:
    with trio.move_on_at(deadline_s):
        for pidfd in pidfds:
            await pidfd.wait_exit()
