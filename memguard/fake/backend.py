"""Backend for fake trees: memguard's real readers, inotify instead of kernel events.

A fake tree is not cgroupfs (statfs says so), so there is no threshold
eventfd, PSI or memory.events notification: the guard is woken by inotify
whenever the fake kernel rewrites a cgroup's usage, limit or event files.
Kernel effects that are synchronous on a real cgroup happen here too: a flush
drops clean cache at once (all of it on v1, the request on v2), cgroup.kill
(v2) kills every member, and processes that died are uncharged before every
read. The tree's marker says which cgroup version it imitates.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from memguard.backends.base import NamedService
from memguard.backends.doorbell import Doorbell
from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.wake import Wake
from memguard.errors import WatchError
from memguard.fake import files, model
from memguard.kernel import cgroup_v1, cgroup_v2, names
from memguard.kernel.inotify import IN_CLOSE_WRITE, IN_MOVED_TO, InotifyEvent
from memguard.policy.model import MemorySnapshot


class FakeNotifier:
    def __init__(self, cgroup_dir: str, version: int) -> None:
        self._cgroup_dir = cgroup_dir
        self._watched = {
            files.usage_file(version),
            files.limit_file(version),
            names.OOM_CONTROL_FILE,
            names.EVENTS_FILE,
        }
        self.bell = Doorbell()
        self.limit_watched = True

    @property
    def kernel_woke_at(self) -> float | None:
        return self.bell.kernel_woke_at

    def on_file_event(self, event: InotifyEvent) -> None:
        if event.name in self._watched:
            self.bell.ring(Wake.FILE)

    def usage_bytes(self) -> int | None:
        memory = model.read(self._cgroup_dir)
        return None if memory is None else memory.usage_bytes

    async def arm(
        self,
        threshold_bytes: int | None,
        warning_bytes: int | None = None,
        last_chance_bytes: int | None = None,
        soft_bytes: int | None = None,
    ) -> bool:
        # Every write wakes the guard; there is nothing to register.
        return model.read(self._cgroup_dir) is not None

    async def wait(self, timeout_s: float) -> frozenset[Wake]:
        return await self.bell.wait(None, timeout_s)


class FakeBackend:
    name = "fake"
    flush_blocks = False
    fds_per_guard = 0  # wakes by the shared inotify instance only

    def __init__(self, cgroup_version: int = 1) -> None:
        self.cgroup_version = cgroup_version
        self.name = f"fake-v{cgroup_version}"

    def exists(self, cgroup_dir: str) -> bool:
        return os.path.isdir(cgroup_dir)

    def mounted(self, path: str) -> bool:
        """The fake tree (its marker) is still there."""
        return model.find_marker(path) is not None

    def freezer_for(self, cgroup_dir: str) -> str | None:
        return None  # no freezer: container kills go round by round

    def snapshot(self, cgroup_dir: str) -> MemorySnapshot | None:
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return None
            model.settle(memory)
        if self.cgroup_version == 1:
            return cgroup_v1.read_snapshot(cgroup_dir)
        return cgroup_v2.read_snapshot(cgroup_dir)

    def pids(self, cgroup_dir: str) -> list[int] | None:
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return None
            model.settle(memory)
            return list(memory.pids)

    def flush(self, cgroup_dir: str, request_bytes: int) -> bool:
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return False
            model.reclaim(memory, None if self.cgroup_version == 1 else request_bytes)
            return True

    def kill_all(self, cgroup_dir: str) -> bool | None:
        if self.cgroup_version == 1:
            return None
        with model.locked(cgroup_dir) as memory:
            if memory is None:
                return False
            for pid in memory.pids:  # the fake tree's own processes
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return True

    @property
    def unified_settings(self) -> bool:
        return self.cgroup_version == 2

    def read_setting(self, cgroup_dir: str, file: str) -> str | None:
        """A fake v2 tree's setting; an absent file reads as the kernel's default."""
        if self.cgroup_version == 1 or not os.path.isdir(cgroup_dir):
            return None
        try:
            with open(os.path.join(cgroup_dir, file)) as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return "max"

    def write_setting(self, cgroup_dir: str, file: str, value: str) -> bool:
        if self.cgroup_version == 1 or not os.path.isdir(cgroup_dir):
            return False
        with open(os.path.join(cgroup_dir, file), "w") as handle:
            handle.write(value + "\n")
        return True

    def services(self) -> list[NamedService]:
        return []

    @contextmanager
    def notifier(self, cgroup_dir: str, hub: InotifyHub) -> Iterator[FakeNotifier]:
        notifier = FakeNotifier(cgroup_dir, self.cgroup_version)
        subscription = None
        try:
            subscription = hub.subscribe(
                cgroup_dir, IN_CLOSE_WRITE | IN_MOVED_TO, notifier.on_file_event
            )
        except WatchError:
            notifier.limit_watched = False  # the guard re-reads often instead
        try:
            yield notifier
        finally:
            if subscription is not None:
                hub.unsubscribe(subscription)
