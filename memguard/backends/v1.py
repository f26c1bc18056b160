"""cgroup v1 backend: eventfd thresholds, oom_control events, force_empty."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from memguard.backends.base import NamedService
from memguard.backends.doorbell import Doorbell
from memguard.backends.hold import HoldLedger
from memguard.backends.inotify_hub import InotifyHub, Subscription
from memguard.backends.wake import Wake
from memguard.errors import WatchError
from memguard.kernel import cgroup_v1, cgroupfs, freezer, names
from memguard.kernel.eventfd import EventFd
from memguard.kernel.fstype import FsKind, still_on
from memguard.kernel.inotify import IN_CLOSE_WRITE, IN_MODIFY, InotifyEvent
from memguard.policy.model import MemorySnapshot

log = logging.getLogger(__name__)

# Registering a usage threshold waits for an RCU grace period in the kernel
# (synchronize_rcu in __mem_cgroup_usage_register_event): ~7 ms measured here.
# So registrations run in worker threads, a few at once (their grace periods
# overlap), and never stall the trio thread that every guard shares.
MAX_PARALLEL_REGISTRATIONS = 8


class V1Notifier:
    """One eventfd per cgroup carries the OOM event and every usage level (warning,
    threshold, last chance; the graceful policy's soft level): each is one more
    registration on the same eventfd.

    Re-arming registers a new eventfd before closing the old one, so there is
    no window without a registration; closing an eventfd unregisters it. An fd
    on memory.usage_in_bytes stays open: a wake-up costs one pread to read usage.
    With a ledger (--hold-at-limit) the cgroup's oom_kill_disable is set while
    it is guarded: at the limit the kernel parks the allocating tasks instead of
    killing one, and the OOM event wakes the guard. Memguard's own cgroup is
    never held (parked, memguard could not act on itself); a cgroup whose
    oom_kill_disable someone else set is left as found; memguard's own hold
    (recorded in the ledger, see backends.hold) is put back to 0 when the guard
    stops.
    """

    def __init__(
        self, cgroup_dir: str, limiter: trio.CapacityLimiter, ledger: HoldLedger | None
    ) -> None:
        self._cgroup_dir = cgroup_dir
        self._limiter = limiter
        self._ledger = ledger
        self._eventfd: EventFd | None = None
        self._usage_fd: int | None = None
        self._hold_decided = ledger is None
        self.holding = False  # memguard set (or took over) oom_kill_disable 1 here
        self.bell = Doorbell()
        self.limit_watched = True

    @property
    def kernel_woke_at(self) -> float | None:
        return self.bell.kernel_woke_at

    def on_file_event(self, event: InotifyEvent) -> None:
        if event.name == names.LIMIT_FILE:
            self.bell.ring(Wake.LIMIT)

    def usage_bytes(self) -> int | None:
        if self._usage_fd is None:
            self._usage_fd = cgroup_v1.open_usage(self._cgroup_dir)
            if self._usage_fd is None:
                return None
        return cgroup_v1.pread_usage(self._usage_fd)

    def _register(self, eventfd: int, levels: tuple[int | None, ...]) -> bool:
        if not cgroup_v1.register_oom(eventfd, self._cgroup_dir):
            return False
        for level in levels:
            if level is not None and not cgroup_v1.register_threshold(
                eventfd, self._cgroup_dir, level
            ):
                return False
        return True

    async def arm(
        self,
        threshold_bytes: int | None,
        warning_bytes: int | None = None,
        last_chance_bytes: int | None = None,
        soft_bytes: int | None = None,
    ) -> bool:
        if not self._hold_decided:
            await trio.to_thread.run_sync(self._take_hold)
        fresh = EventFd()
        levels = (threshold_bytes, warning_bytes, last_chance_bytes, soft_bytes)
        try:
            # Not abandoned on cancel: the thread uses fresh's fd until it returns.
            registered = await trio.to_thread.run_sync(
                self._register, fresh.fileno(), levels, limiter=self._limiter
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

    def _take_hold(self) -> None:
        """Set oom_kill_disable 1 where memguard may (see the class docstring)."""
        assert self._ledger is not None
        control = cgroup_v1.read_oom_control(self._cgroup_dir)
        procs = cgroupfs.read_procs(self._cgroup_dir)
        if control is None or procs is None:
            return  # gone: the guard ends; nothing held
        self._hold_decided = True
        if os.getpid() in procs:
            log.warning("not holding %s at its limit: memguard runs in it", self._cgroup_dir)
        elif self._ledger.inherited(self._cgroup_dir):
            self.holding = True  # a previous run's hold: this guard owns it now
        elif control.get("oom_kill_disable", 0) == 1:
            log.info("%s: oom_kill_disable was already 1 (not memguard's)", self._cgroup_dir)
        elif self._ledger.taken(self._cgroup_dir):
            self.holding = True
            if not cgroup_v1.set_oom_kill_disable(self._cgroup_dir, True):
                self.close_hold()

    async def wait(self, timeout_s: float) -> frozenset[Wake]:
        fd = None if self._eventfd is None else self._eventfd.fileno()
        reasons = await self.bell.wait(fd, timeout_s)
        if Wake.KERNEL in reasons and self._eventfd is not None:
            self._eventfd.read_nowait()
        return reasons

    def close_hold(self) -> None:
        if self.holding and self._ledger is not None:
            self._ledger.release(self._cgroup_dir)
        self.holding = False

    def close(self) -> None:
        self.close_hold()
        if self._eventfd is not None:
            self._eventfd.close()
            self._eventfd = None
        if self._usage_fd is not None:
            os.close(self._usage_fd)
            self._usage_fd = None


class V1Backend:
    name = "cgroup-v1"
    flush_blocks = True
    fds_per_guard = 2  # the eventfd (levels and OOM events), memory.usage_in_bytes

    def __init__(
        self,
        memory_root: str | None = None,
        freezer_root: str | None = None,
        ledger: HoldLedger | None = None,
    ) -> None:
        self._registration_limiter = trio.CapacityLimiter(MAX_PARALLEL_REGISTRATIONS)
        self._memory_root = memory_root
        self._freezer_root = freezer_root
        self.ledger = ledger  # None: no --hold-at-limit

    def freezer_for(self, cgroup_dir: str) -> str | None:
        """The freezer cgroup mirroring cgroup_dir (the kubelet and runc make one)."""
        if self._memory_root is None or self._freezer_root is None:
            return None
        return freezer.mirror(cgroup_dir, self._memory_root, self._freezer_root)

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
        notifier = V1Notifier(cgroup_dir, self._registration_limiter, self.ledger)
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
