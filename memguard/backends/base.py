"""The interface a guard drives, one implementation per cgroup flavour.

A backend reads snapshots and member pids, flushes page cache and opens a
notifier; a notifier is armed with a threshold and waits for the kernel (or a
fake tree's file writes) to say something changed. v1 lives in backend_v1,
fake trees in memguard.fake.backend, cgroup v2 in backend_v2.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from memguard.backends.doorbell import Doorbell
from memguard.backends.inotify_hub import InotifyHub
from memguard.backends.wake import Wake
from memguard.policy.model import MemorySnapshot

# A long-running trio task: `await nursery.start(service)` (it calls task_status.started()).
Service = Callable[..., Awaitable[Any]]
# A service with its component name (logs, memguard_component_failures_total).
NamedService = tuple[str, Service]


class Notifier(Protocol):
    async def arm(
        self,
        threshold_bytes: int | None,
        warning_bytes: int | None = None,
        last_chance_bytes: int | None = None,
        soft_bytes: int | None = None,
    ) -> bool:
        """(Re-)arm at threshold_bytes (None: OOM events only) and, where the
        backend can, at the warning, last-chance and soft (graceful) levels too;
        False if gone."""
        ...

    @property
    def bell(self) -> Doorbell:
        """Where others ring the guard awake (a limit write, a pod's overrides)."""
        ...

    def usage_bytes(self) -> int | None:
        """Usage now, as cheaply as the backend can read it; None when gone."""
        ...

    async def wait(self, timeout_s: float) -> frozenset[Wake]:
        """Why the guard woke (coalesced; never empty)."""
        ...

    @property
    def kernel_woke_at(self) -> float | None:
        """perf_counter() of the last kernel wake-up (for latency reports)."""
        ...

    @property
    def limit_watched(self) -> bool:
        """inotify tells of limit changes; False when it could not watch the cgroup
        (the watch limit): the guard then re-reads the limit more often."""
        ...


class Backend(Protocol):
    name: str
    # True when flush() blocks in the kernel and must run off the trio thread.
    flush_blocks: bool
    # File descriptors each guard's notifier holds while it guards.
    fds_per_guard: int

    def mounted(self, path: str) -> bool:
        """path (or its nearest existing ancestor) is still on this backend's filesystem."""
        ...

    def freezer_for(self, cgroup_dir: str) -> str | None:
        """A cgroup v1 freezer mirroring cgroup_dir (container kills), or None."""
        ...

    def exists(self, cgroup_dir: str) -> bool:
        """The cgroup directory is there (its memory files may not be, yet)."""
        ...

    def snapshot(self, cgroup_dir: str) -> MemorySnapshot | None: ...

    def pids(self, cgroup_dir: str) -> list[int] | None: ...

    def flush(self, cgroup_dir: str, request_bytes: int) -> bool:
        """Reclaim page cache (v1: all of it; v2: request_bytes); False when gone."""
        ...

    def kill_all(self, cgroup_dir: str) -> bool | None:
        """SIGKILL every process at once (v2 cgroup.kill); None when not supported."""
        ...

    def notifier(self, cgroup_dir: str, hub: InotifyHub) -> AbstractContextManager[Notifier]: ...

    def services(self) -> list[NamedService]:
        """Tasks the backend needs beside the guards (v2: the memory.current poller)."""
        ...

    @property
    def unified_settings(self) -> bool:
        """cgroup v2 control files (memory QoS) exist: v1 has no memory.high, memory.swap.max."""
        ...

    def read_setting(self, cgroup_dir: str, file: str) -> str | None:
        """A control file's value; None when absent (or on v1)."""
        ...

    def write_setting(self, cgroup_dir: str, file: str, value: str) -> bool:
        """Write a control file (blocks: call off the trio thread); False when gone.

        Raises KernelError when the kernel refuses the value."""
        ...
