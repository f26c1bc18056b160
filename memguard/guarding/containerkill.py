"""One container kill: every member that may be killed, signals first.

The prepared pidfds are signalled first (the memory hog first), then - cgroup
v2 - cgroup.kill signals every member at once. Then cgroup.procs is read again
until it is empty: new pids (a fork bomb forks faster than it is read) are
signalled round after round, and on cgroup v1 the freezer mirror (freeze, kill
every member, thaw - how runc kills a v1 container) stops them from forking at
all. Memory is reaped (process_mrelease) only once every member is signalled.
"""

from __future__ import annotations

import signal
import time

import trio

from memguard.backends.base import Backend
from memguard.guarding.prepared import Prepared, protected_among
from memguard.guarding.signalling import kill_pid, release
from memguard.kernel import freezer
from memguard.kernel.pidfd import Process
from memguard.kernel.sched import RealtimeBurst

FREEZE_WAIT_S = 0.2  # a task stuck in a syscall may take this long to freeze
DYING_POLL_S = 0.002  # signalled members take a moment to leave cgroup.procs


class ContainerKill:
    """One container kill: prepared pidfds, then rounds of cgroup.procs, then the
    freezer (v1) or cgroup.kill (v2) for what keeps coming."""

    def __init__(
        self,
        backend: Backend,
        burst: RealtimeBurst,
        protected_pids: frozenset[int],
        cgroup_dir: str,
        prepared: Prepared | None,
    ) -> None:
        self.backend = backend
        self.burst = burst
        self.protected_pids = protected_pids
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
        self.spared |= protected_among(fresh, self.prepared, self.protected_pids)
        count = 0
        for pid in fresh:
            if pid in self.spared:
                continue
            self._mark()
            if kill_pid(pid):
                self.signalled.append(pid)
                count += 1
        return count

    def _release_all(self) -> None:
        for process in self.processes:
            release(process)

    async def execute(self, deadline_s: float) -> bool:
        """Kill until no member may be left alive; False when the cgroup is gone."""
        done: bool | None = None
        with self.burst as realtime:  # the dying wait until all are signalled
            self.realtime = realtime
            self._signal_prepared()
            if not self.spared and (self.prepared is None or not self.prepared.protected):
                self._mark()
                done = self.backend.kill_all(self.cgroup_dir)  # v2 cgroup.kill: all at once
        if done is not None:
            if not done:
                return False
            self._killed_all()
            # on to the rounds: they wait for the dying to leave (and would
            # signal any newcomer, though cgroup.kill leaves none)
        return await self._rounds(deadline_s)

    def _killed_all(self) -> None:
        """cgroup.kill signalled every member: reap, and list those known or seen."""
        self.cgroup_kill = True
        self._release_all()
        before = self.prepared.members if self.prepared is not None else ()
        members = self.backend.pids(self.cgroup_dir) or []  # those not gone already
        self.signalled += [p for p in dict.fromkeys([*before, *members]) if p not in self.signalled]

    async def _rounds(self, deadline_s: float) -> bool:
        """Read cgroup.procs until only the spared are left, signalling newcomers
        (the freezer stops a fork bomb); False when the cgroup is gone."""
        known = set(self.prepared.members) if self.prepared is not None else None
        released = False
        with trio.move_on_at(deadline_s):
            while True:
                pids = self.backend.pids(self.cgroup_dir)
                if pids is None:
                    return False
                if not [pid for pid in pids if pid not in self.spared]:
                    return True
                # members the preparation did not know: it forks, so freeze it too
                forking = known is not None and not known.issuperset(pids)
                with self.burst:
                    fresh = self._signal_round(pids)
                self.rounds += 1 if fresh else 0
                if not released:  # every member signalled once: now free their memory
                    released = True
                    self._release_all()
                if fresh and not self.froze and (self.rounds >= 2 or forking):
                    await self._freeze_and_kill()
                # the signalled are dying: look again soon, without spinning
                await trio.sleep(0 if fresh else DYING_POLL_S)
        return True

    async def _freeze_and_kill(self) -> None:
        """New members keep coming (a fork bomb): freeze them, kill all, thaw."""
        frozen = self.backend.freezer_for(self.cgroup_dir)
        if frozen is None:
            return
        if not await trio.to_thread.run_sync(freezer.freeze, frozen):
            return
        try:
            with trio.move_on_after(FREEZE_WAIT_S):
                while freezer.state(frozen) != freezer.FROZEN:  # noqa: ASYNC110 - no event
                    await trio.sleep(0.001)
            members = freezer.members(frozen) or []
            if set(members) == set(self.backend.pids(self.cgroup_dir) or ()):
                with self.burst:
                    self._signal_round(members)  # the same container: safe by pid, frozen
                self.froze = True
        finally:
            await trio.to_thread.run_sync(freezer.thaw, frozen)


async def wait_exits(processes: list[Process], deadline_s: float) -> None:
    with trio.move_on_at(deadline_s):
        for process in processes:
            await process.wait_exit()
