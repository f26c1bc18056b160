"""Backend for fake trees: memguard's real v1 readers, inotify instead of eventfd.

A fake tree is not cgroupfs (statfs says so), so there is no threshold eventfd:
the guard is woken by inotify whenever the fake kernel rewrites a cgroup's
usage, limit or OOM files. Kernel effects that are synchronous on a real
cgroup happen here too: a flush drops clean cache at once, and processes that
died are uncharged before every read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from memguard.doorbell import Doorbell
from memguard.fake import model
from memguard.kernel import cgroup_v1
from memguard.kernel.inotify import IN_CLOSE_WRITE, IN_MOVED_TO, InotifyEvent
from memguard.policy.model import MemorySnapshot
from memguard.watch import InotifyHub

FILE_CHANGED = "file"
_WATCHED_FILES = frozenset({cgroup_v1.USAGE_FILE, cgroup_v1.LIMIT_FILE, cgroup_v1.OOM_CONTROL_FILE})


class FakeNotifier:
    def __init__(self, cgroup_dir: str) -> None:
        self._cgroup_dir = cgroup_dir
        self.bell = Doorbell()

    @property
    def kernel_woke_at(self) -> float | None:
        return self.bell.kernel_woke_at

    def on_file_event(self, event: InotifyEvent) -> None:
        if event.name in _WATCHED_FILES:
            self.bell.ring(FILE_CHANGED)

    async def arm(self, threshold_bytes: int | None) -> bool:
        # Every write wakes the guard; there is nothing to register.
        return model.read(self._cgroup_dir) is not None

    async def wait(self, timeout_s: float) -> frozenset[str]:
        return await self.bell.wait(None, timeout_s)


class FakeBackend:
    name = "fake"
    flush_blocks = False

    def exists(self, cgroup_dir: str) -> bool:
        return os.path.isdir(cgroup_dir)

    def snapshot(self, cgroup_dir: str) -> MemorySnapshot | None:
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return None
            model.settle(memory)
        return cgroup_v1.read_snapshot(cgroup_dir)

    def pids(self, cgroup_dir: str) -> list[int] | None:
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return None
            model.settle(memory)
            return list(memory.pids)

    def flush(self, cgroup_dir: str) -> bool:
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return False
            model.reclaim(memory)
            return True

    @contextmanager
    def notifier(self, cgroup_dir: str, hub: InotifyHub) -> Iterator[FakeNotifier]:
        notifier = FakeNotifier(cgroup_dir)
        subscription = hub.subscribe(
            cgroup_dir, IN_CLOSE_WRITE | IN_MOVED_TO, notifier.on_file_event
        )
        try:
            yield notifier
        finally:
            if subscription is not None:
                hub.unsubscribe(subscription)
