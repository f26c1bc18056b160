"""cgroup v2 backend: memory.events, PSI triggers and adaptive polling.

v2 has no usage-threshold event, so a guard is woken by whichever comes first:
- memory.events changed (inotify on the cgroup directory): high, max, oom and
  oom_kill counters - the kernel batches these notifications (10 ms);
- the PSI trigger on memory.pressure fired (tasks stalled on memory);
- the adaptive poll of memory.current found usage at or over the threshold
  (interval: half of headroom / fill rate, 10 ms .. 1 s by default;
  memguard.policy.poll; one shared poller task: memguard.v2poller);
- the memory.high tripwire (--high-tripwire auto|on|off): memory.high =
  threshold makes the kernel count "high" events (and throttle the allocator)
  from the threshold on. memguard sets it only where memory.high reads "max"
  (nobody else owns it: the kubelet's MemoryQoS writes it at creation), in
  whole pages as the kernel keeps it, puts "max" back when it stops guarding,
  and stands aside for good once another writer changed it. `auto` (the
  default) also stays off where memguard's own memory QoS manages memory.high
  (a class or a memory.high annotation): the QoS applier claims the cgroup
  (claim_memory_high) before it writes, which takes a tripwire already there
  away first, so what QoS remembers to put back is "max", not the tripwire;
  released, the tripwire returns at the next arm. `on` (the old switch)
  ignores claims: the QoS value then replaces the tripwire, and QoS puts the
  tripwire back.
Flush is memory.reclaim of what brings usage one margin under the threshold;
a container kill is cgroup.kill.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from memguard.backends.base import NamedService
from memguard.backends.doorbell import Doorbell
from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.poller import PollEntry, Poller, close_entry
from memguard.backends.wake import V2_SIGNALS, Wake
from memguard.errors import Unsupported, WatchError
from memguard.kernel import cgroup_v2, cgroupfs, names
from memguard.kernel.fstype import FsKind, still_on
from memguard.kernel.inotify import IN_MODIFY, InotifyEvent
from memguard.kernel.psi import PsiTrigger
from memguard.policy.model import MemorySnapshot
from memguard.policy.poll import PollSettings

log = logging.getLogger(__name__)

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class Tripwire(StrEnum):
    """--high-tripwire: where memguard sets memory.high to the threshold."""

    AUTO = "auto"  # where memory.high reads "max" and memguard's memory QoS does not own it
    ON = "on"  # where memory.high reads "max"
    OFF = "off"  # never


@dataclass(frozen=True)
class V2Settings:
    signals: frozenset[str] = V2_SIGNALS
    psi_trigger: str = "some 50000 500000"  # 50 ms of stall within 500 ms
    poll: PollSettings = field(default_factory=PollSettings)
    # True and False (the switch it was) mean ON and OFF; read it as .tripwire.
    high_tripwire: Tripwire | bool = Tripwire.AUTO

    def __post_init__(self) -> None:
        object.__setattr__(self, "high_tripwire", _tripwire(self.high_tripwire))

    @property
    def tripwire(self) -> Tripwire:
        return _tripwire(self.high_tripwire)


def _tripwire(value: Tripwire | bool) -> Tripwire:
    if isinstance(value, bool):
        return Tripwire.ON if value else Tripwire.OFF
    return Tripwire(value)


class V2Notifier:
    def __init__(
        self,
        cgroup_dir: str,
        settings: V2Settings,
        poller: Poller,
        high_claimed: Callable[[], bool] = lambda: False,
    ) -> None:
        self._cgroup_dir = cgroup_dir
        self._settings = settings
        self._poller = poller
        self._high_claimed = high_claimed  # memguard's memory QoS owns memory.high here
        self.bell = Doorbell()
        self._psi: PsiTrigger | None = None
        self._poll: PollEntry | None = None
        self._tripwire_bytes: int | None = None  # memory.high as memguard set it
        self.woke_at: float | None = None
        self.limit_watched = True

    @property
    def kernel_woke_at(self) -> float | None:
        return self.woke_at

    def on_file_event(self, event: InotifyEvent) -> None:
        if event.name == names.EVENTS_FILE and Wake.EVENTS in self._settings.signals:
            self.bell.ring(Wake.EVENTS)
        elif event.name == names.MAX_FILE:
            self.bell.ring(Wake.LIMIT)

    def open(self) -> bool:
        """Open the PSI trigger and memory.current; False when the cgroup is gone."""
        if Wake.POLL in self._settings.signals:
            fd = cgroup_v2.open_current(self._cgroup_dir)
            if fd is None:
                return False
            self._poll = PollEntry(fd, self.bell)
            self._poller.add(self._poll)
        if Wake.PSI in self._settings.signals:
            try:
                self._psi = PsiTrigger.open(self._cgroup_dir, self._settings.psi_trigger)
            except Unsupported as error:
                log.warning(
                    "no PSI trigger for %s (%s): events and polling only", self._cgroup_dir, error
                )
        return True

    def usage_bytes(self) -> int | None:
        if self._poll is not None:
            return cgroup_v2.pread_current(self._poll.fd)
        return cgroup_v2.read_current(self._cgroup_dir)

    async def arm(
        self,
        threshold_bytes: int | None,
        warning_bytes: int | None = None,
        last_chance_bytes: int | None = None,
        soft_bytes: int | None = None,
    ) -> bool:
        if self._poll is not None:
            # the graceful policy acts at its soft level: the poll wakes the guard there
            self._poll.threshold_bytes = threshold_bytes if soft_bytes is None else soft_bytes
        tripwire = self._settings.tripwire
        if tripwire is Tripwire.ON or (tripwire is Tripwire.AUTO and not self._high_claimed()):
            # graceful: the tripwire marks the soft level (where memguard acts; the
            # poll at rest may be a second away), and slows the allocator past it
            return self._set_tripwire(threshold_bytes if soft_bytes is None else soft_bytes)
        return cgroup_v2.read_max(self._cgroup_dir)[0]

    def _set_tripwire(self, threshold_bytes: int | None) -> bool:
        present, high = cgroup_v2.read_max(self._cgroup_dir, names.HIGH_FILE)
        if not present:
            return False
        if high is not None and high != self._tripwire_bytes:
            return True  # someone else manages memory.high (kubelet MemoryQoS): leave it
        # The kernel keeps memory.high in pages (rounded down): write what it will
        # read back, or memguard would not recognise its own tripwire.
        if threshold_bytes is not None:
            threshold_bytes -= threshold_bytes % PAGE_BYTES
        self._tripwire_bytes = threshold_bytes
        return cgroup_v2.write_high(self._cgroup_dir, threshold_bytes)

    def withdraw_tripwire(self) -> None:
        """Take the tripwire away ("max" back) if memory.high still holds it."""
        if self._settings.tripwire is not Tripwire.AUTO or self._tripwire_bytes is None:
            return
        present, high = cgroup_v2.read_max(self._cgroup_dir, names.HIGH_FILE)
        if present and high == self._tripwire_bytes:
            cgroup_v2.write_high(self._cgroup_dir, None)  # "max": no reclaim, quick
        self._tripwire_bytes = None

    async def wait(self, timeout_s: float) -> frozenset[Wake]:
        psi_fd = None if self._psi is None else self._psi.fileno()
        reasons = await self.bell.wait(psi_fd, timeout_s)
        if Wake.KERNEL in reasons and self._psi is not None:
            self._psi.drain()
            reasons = (reasons - {Wake.KERNEL}) | {Wake.PSI}
        polled_at = self._poll.woke_at if self._poll is not None else None
        if Wake.POLL in reasons and polled_at is not None:
            self.woke_at = polled_at  # when the poller saw it, not when the guard woke
        elif reasons != {Wake.TIMEOUT}:
            self.woke_at = time.perf_counter()
        return reasons

    def close(self) -> None:
        if self._psi is not None:
            self._psi.close()
            self._psi = None
        if self._poll is not None:
            close_entry(self._poll)
            self._poll = None
        if self._tripwire_bytes is not None:
            present, high = cgroup_v2.read_max(self._cgroup_dir, names.HIGH_FILE)
            if present and high == self._tripwire_bytes:
                cgroup_v2.write_high(self._cgroup_dir, None)  # give "max" back
            self._tripwire_bytes = None


class V2Backend:
    name = "cgroup-v2"
    flush_blocks = True

    def __init__(self, settings: V2Settings | None = None) -> None:
        self.settings = settings or V2Settings()
        self.poller = Poller(self.settings.poll)
        # memory.current for the poll; memory.pressure and its private epoll for PSI
        self.fds_per_guard = (Wake.POLL in self.settings.signals) + 2 * (
            Wake.PSI in self.settings.signals
        )
        self._high_claims: set[str] = set()  # memory.high owned by memguard's memory QoS
        self._notifiers: dict[str, V2Notifier] = {}

    def mounted(self, path: str) -> bool:
        return still_on(path, FsKind.CGROUP_V2)

    def freezer_for(self, cgroup_dir: str) -> str | None:
        return None  # cgroup.kill kills a whole v2 cgroup at once

    def services(self) -> list[NamedService]:
        return [("v2-poller", self.poller.run)] if Wake.POLL in self.settings.signals else []

    def exists(self, cgroup_dir: str) -> bool:
        return os.path.isdir(cgroup_dir)

    def snapshot(self, cgroup_dir: str) -> MemorySnapshot | None:
        return cgroup_v2.read_snapshot(cgroup_dir)

    def pids(self, cgroup_dir: str) -> list[int] | None:
        return cgroupfs.read_procs(cgroup_dir)  # cgroup.procs: the same format

    def flush(self, cgroup_dir: str, request_bytes: int) -> bool:
        return cgroup_v2.reclaim(cgroup_dir, request_bytes)

    def kill_all(self, cgroup_dir: str) -> bool | None:
        return cgroup_v2.kill_all(cgroup_dir)

    unified_settings = True

    def read_setting(self, cgroup_dir: str, file: str) -> str | None:
        return cgroup_v2.read_setting(cgroup_dir, file)

    def write_setting(self, cgroup_dir: str, file: str, value: str) -> bool:
        return cgroup_v2.write_setting(cgroup_dir, file, value)

    # memory.high and memguard's memory QoS (memguard.qos.applier), on the trio thread

    def claim_memory_high(self, cgroup_dir: str) -> None:
        """Memory QoS manages memory.high here from now on (said before it writes):
        with --high-tripwire auto a tripwire there goes ("max" back) and stays off."""
        self._high_claims.add(cgroup_dir)
        notifier = self._notifiers.get(cgroup_dir)
        if notifier is not None:
            notifier.withdraw_tripwire()

    def release_memory_high(self, cgroup_dir: str) -> None:
        """Memory QoS no longer manages memory.high here: the tripwire may come back
        (at the guard's next arm) where memory.high reads "max"."""
        self._high_claims.discard(cgroup_dir)

    @contextmanager
    def notifier(self, cgroup_dir: str, hub: InotifyHub) -> Iterator[V2Notifier]:
        claims = self._high_claims
        notifier = V2Notifier(cgroup_dir, self.settings, self.poller, lambda: cgroup_dir in claims)
        self._notifiers[cgroup_dir] = notifier
        subscription = None
        try:
            subscription = hub.subscribe(cgroup_dir, IN_MODIFY, notifier.on_file_event)
        except WatchError:
            notifier.limit_watched = False  # no memory.events wake-ups either: poll, PSI
        try:
            notifier.open()
            yield notifier
        finally:
            notifier.close()
            if self._notifiers.get(cgroup_dir) is notifier:
                del self._notifiers[cgroup_dir]
            if subscription is not None:
                hub.unsubscribe(subscription)
