"""cgroup v1 backend: eventfd thresholds, oom_control events, force_empty."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from memguard.backends.base import NamedService
from memguard.backends.doorbell import Doorbell
from memguard.backends.inotify_hub import InotifyHub, Subscription
from memguard.backends.wake import Wake
from memguard.errors import WatchError
from memguard.kernel import cgroup_v1, cgroupfs, names
from memguard.kernel.eventfd import EventFd
from memguard.kernel.fstype import FsKind, still_on
from memguard.kernel.inotify import IN_CLOSE_WRITE, IN_MODIFY, InotifyEvent
from memguard.policy.model import MemorySnapshot

# Registering a usage threshold waits for an RCU grace period in the kernel
# (synchronize_rcu in __mem_cgroup_usage_register_event): ~7 ms measured here.
# So registrations run in worker threads, a few at once (their grace periods
# overlap), and never stall the trio thread that every guard shares.
MAX_PARALLEL_REGISTRATIONS = 8


class V1Notifier:
    """One eventfd per cgroup carries both the threshold and the OOM event.

    Re-arming registers a new eventfd before closing the old one, so there is
    no window without a registration; closing an eventfd unregisters it.
    """

    def __init__(self, cgroup_dir: str, limiter: trio.CapacityLimiter) -> None:
        self._cgroup_dir = cgroup_dir
        self._limiter = limiter
        self._eventfd: EventFd | None = None
        self.bell = Doorbell()
        self.limit_watched = True

    @property
    def kernel_woke_at(self) -> float | None:
        return self.bell.kernel_woke_at

    def on_file_event(self, event: InotifyEvent) -> None:
        if event.name == names.LIMIT_FILE:
            self.bell.ring(Wake.LIMIT)

    def _register(self, eventfd: int, threshold_bytes: int | None) -> bool:
        return cgroup_v1.register_oom(eventfd, self._cgroup_dir) and (
            threshold_bytes is None
            or cgroup_v1.register_threshold(eventfd, self._cgroup_dir, threshold_bytes)
        )

    async def arm(self, threshold_bytes: int | None) -> bool:
        fresh = EventFd()
        try:
            # Not abandoned on cancel: the thread uses fresh's fd until it returns.
            registered = await trio.to_thread.run_sync(
                self._register, fresh.fileno(), threshold_bytes, limiter=self._limiter
            )
        except BaseException:
            fresh.close()
            raise
        if not registered:
            fresh.close()
            return False
        if self._eventfd is not None:
            self._eventfd.close()
        self._eventfd = fresh
        return True

    async def wait(self, timeout_s: float) -> frozenset[Wake]:
        fd = None if self._eventfd is None else self._eventfd.fileno()
        reasons = await self.bell.wait(fd, timeout_s)
        if Wake.KERNEL in reasons and self._eventfd is not None:
            self._eventfd.read_nowait()
        return reasons

    def close(self) -> None:
        if self._eventfd is not None:
            self._eventfd.close()
            self._eventfd = None


class V1Backend:
    name = "cgroup-v1"
    flush_blocks = True
    fds_per_guard = 1  # the eventfd carrying threshold and OOM events

    def __init__(self) -> None:
        self._registration_limiter = trio.CapacityLimiter(MAX_PARALLEL_REGISTRATIONS)

    def exists(self, cgroup_dir: str) -> bool:
        return os.path.isdir(cgroup_dir)

    def mounted(self, path: str) -> bool:
        return still_on(path, FsKind.CGROUP_V1)

    def snapshot(self, cgroup_dir: str) -> MemorySnapshot | None:
        return cgroup_v1.read_snapshot(cgroup_dir)

    def pids(self, cgroup_dir: str) -> list[int] | None:
        return cgroupfs.read_procs(cgroup_dir)

    def flush(self, cgroup_dir: str, request_bytes: int) -> bool:
        return cgroup_v1.force_empty(cgroup_dir)  # v1 has no partial reclaim

    def kill_all(self, cgroup_dir: str) -> bool | None:
        return None  # no cgroup.kill on v1: processes are killed one by one

    unified_settings = False

    def read_setting(self, cgroup_dir: str, file: str) -> str | None:
        return None

    def write_setting(self, cgroup_dir: str, file: str, value: str) -> bool:
        return False  # no memory.high / memory.swap.max on v1 (unified_settings)

    def services(self) -> list[NamedService]:
        return []

    @contextmanager
    def notifier(self, cgroup_dir: str, hub: InotifyHub) -> Iterator[V1Notifier]:
        notifier = V1Notifier(cgroup_dir, self._registration_limiter)
        subscription: Subscription | None = None
        try:
            subscription = hub.subscribe(
                cgroup_dir, IN_MODIFY | IN_CLOSE_WRITE, notifier.on_file_event
            )
        except WatchError:
            notifier.limit_watched = False  # the guard re-reads the limit more often
        try:
            yield notifier
        finally:
            notifier.close()
            if subscription is not None:
                hub.unsubscribe(subscription)
