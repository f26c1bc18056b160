"""One task reads memory.current for every guarded cgroup v2, when each is due.

Per-guard timers cost a trio timeout and a task switch per read (~54 µs here);
one poller keeps a heap of due times, wakes once per batch and reads every
cgroup due within COALESCE_S with a single pread each. Far from their
threshold, due times are rounded up to a GRID_S boundary so idle cgroups share
wake-ups. A cgroup found at or over its threshold gets its guard's doorbell
rung ("poll"); the interval policy is memguard.policy.poll.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from dataclasses import dataclass, field

import trio

from memguard.backends.doorbell import Doorbell
from memguard.backends.wake import Wake
from memguard.kernel import cgroup_v2
from memguard.policy.poll import PollSettings, PollState, next_interval_s, observe

COALESCE_S = 0.005
GRID_S = 0.1  # intervals at least this long are aligned to this grid


@dataclass(eq=False)
class PollEntry:
    fd: int
    bell: Doorbell
    threshold_bytes: int | None = None
    state: PollState = field(default_factory=PollState)
    active: bool = True
    woke_at: float | None = None  # perf_counter() when a read found usage over threshold


class Poller:
    def __init__(self, settings: PollSettings) -> None:
        self._settings = settings
        self._heap: list[tuple[float, int, PollEntry]] = []
        self._sequence = itertools.count()
        self._changed = trio.Event()
        self.reads = 0

    def add(self, entry: PollEntry) -> None:
        self._schedule(entry, trio.current_time())

    def _schedule(self, entry: PollEntry, due_s: float) -> None:
        heapq.heappush(self._heap, (due_s, next(self._sequence), entry))
        if self._heap[0][2] is entry:
            self._changed.set()

    def _read(self, entry: PollEntry, now_s: float) -> None:
        usage = cgroup_v2.pread_current(entry.fd)
        self.reads += 1
        if usage is None:
            entry.active = False
            entry.bell.ring(Wake.POLL)  # gone: the guard's next read says so
            return
        entry.state = observe(entry.state, usage, now_s)
        if entry.threshold_bytes is not None and usage >= entry.threshold_bytes:
            entry.woke_at = time.perf_counter()
            entry.bell.ring(Wake.POLL)
        interval_s = next_interval_s(entry.state, entry.threshold_bytes, self._settings)
        due_s = now_s + interval_s
        if interval_s >= GRID_S:
            due_s = (int(due_s / GRID_S) + 1) * GRID_S
        self._schedule(entry, due_s)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._heap:
                await self._changed.wait()
                self._changed = trio.Event()
                continue
            due_s = self._heap[0][0]
            if due_s > trio.current_time():
                with trio.move_on_at(due_s):
                    await self._changed.wait()
                self._changed = trio.Event()
                continue
            horizon_s = trio.current_time() + COALESCE_S
            while self._heap and self._heap[0][0] <= horizon_s:
                _, _, entry = heapq.heappop(self._heap)
                if entry.active:
                    self._read(entry, trio.current_time())


def close_entry(entry: PollEntry) -> None:
    entry.active = False
    os.close(entry.fd)
