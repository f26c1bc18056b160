"""Flushing page cache, as the policy decided (the I/O shell; kills: killer.py).

Flushes of real cgroups block in the kernel (force_empty), so they run in a
worker thread, at most `max_parallel` at once, never twice at once on one
cgroup, and the guard stops waiting after `timeout_s` (the thread finishes on
its own; the cgroup stays marked busy until it does). A guard may also stop
waiting earlier (usage reached its last-chance level): the flush goes on.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import trio

from memguard.backends.base import Backend
from memguard.components import Changes

CONTAINER_KILL_ROUNDS = 5
VICTIM_EXIT_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class FlushOutcome:
    completed: bool  # the flush finished within the bound
    gone: bool = False  # the cgroup vanished
    busy: bool = False  # a previous flush of this cgroup is still running
    duration_s: float = 0.0


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
