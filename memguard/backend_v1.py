"""cgroup v1 backend: eventfd thresholds, oom_control events, force_empty."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from memguard.doorbell import KERNEL, Doorbell
from memguard.kernel import cgroup_v1
from memguard.kernel.eventfd import EventFd
from memguard.kernel.inotify import IN_CLOSE_WRITE, IN_MODIFY, InotifyEvent
from memguard.policy.model import MemorySnapshot
from memguard.watch import InotifyHub, Subscription

LIMIT_CHANGED = "limit"


class V1Notifier:
    """One eventfd per cgroup carries both the threshold and the OOM event.

    Re-arming registers a new eventfd before closing the old one, so there is
    no window without a registration; closing an eventfd unregisters it.
    """

    def __init__(self, cgroup_dir: str) -> None:
        self._cgroup_dir = cgroup_dir
        self._eventfd: EventFd | None = None
        self.bell = Doorbell()

    @property
    def kernel_woke_at(self) -> float | None:
        return self.bell.kernel_woke_at

    def on_file_event(self, event: InotifyEvent) -> None:
        if event.name == cgroup_v1.LIMIT_FILE:
            self.bell.ring(LIMIT_CHANGED)

    def arm(self, threshold_bytes: int | None) -> bool:
        fresh = EventFd()
        registered = cgroup_v1.register_oom(fresh.fileno(), self._cgroup_dir) and (
            threshold_bytes is None
            or cgroup_v1.register_threshold(fresh.fileno(), self._cgroup_dir, threshold_bytes)
        )
        if not registered:
            fresh.close()
            return False
        if self._eventfd is not None:
            self._eventfd.close()
        self._eventfd = fresh
        return True

    async def wait(self, timeout_s: float) -> frozenset[str]:
        fd = None if self._eventfd is None else self._eventfd.fileno()
        reasons = await self.bell.wait(fd, timeout_s)
        if KERNEL in reasons and self._eventfd is not None:
            self._eventfd.read_nowait()
        return reasons

    def close(self) -> None:
        if self._eventfd is not None:
            self._eventfd.close()
            self._eventfd = None


class V1Backend:
    name = "cgroup-v1"
    flush_blocks = True

    def exists(self, cgroup_dir: str) -> bool:
        return os.path.isdir(cgroup_dir)

    def snapshot(self, cgroup_dir: str) -> MemorySnapshot | None:
        return cgroup_v1.read_snapshot(cgroup_dir)

    def pids(self, cgroup_dir: str) -> list[int] | None:
        return cgroup_v1.read_procs(cgroup_dir)

    def flush(self, cgroup_dir: str) -> bool:
        return cgroup_v1.force_empty(cgroup_dir)

    @contextmanager
    def notifier(self, cgroup_dir: str, hub: InotifyHub) -> Iterator[V1Notifier]:
        notifier = V1Notifier(cgroup_dir)
        subscription: Subscription | None = hub.subscribe(
            cgroup_dir, IN_MODIFY | IN_CLOSE_WRITE, notifier.on_file_event
        )
        try:
            yield notifier
        finally:
            notifier.close()
            if subscription is not None:
                hub.unsubscribe(subscription)
