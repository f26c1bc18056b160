"""cgroup v1 memory controller files for one cgroup directory.

Kernel facts (measured on this host's 6.18 kernel):
- "Unlimited" reads as 9223372036854771712 (PAGE_COUNTER_MAX pages); anything
  at or above 2**62 is treated as unlimited.
- Thresholds: write "<eventfd> <fd of memory.usage_in_bytes> <bytes>" to
  cgroup.event_control. The kernel keeps the registration until the eventfd is
  closed; the usage fd may be closed right after the write. The event fires on
  crossings in both directions and once more when the cgroup is removed.
- OOM notification: "<eventfd> <fd of memory.oom_control>"; one eventfd may
  carry both registrations. memory.oom_control counts kernel OOM kills
  (oom_kill) and shows under_oom.
- memory.force_empty reclaims page cache synchronously with tasks still inside
  (200 MiB in ~0.1 s here); callers run it off the trio thread.
- Files of a removed cgroup vanish (ENOENT) or fail with ENODEV; both mean "gone".
"""

from __future__ import annotations

import os

from memguard.kernel.cgroupfs import (
    GONE_ERRNOS,
    UNLIMITED_AT_BYTES,
    kernel_error,
    open_reading,
    parse_flat_keyed,
    parse_int,
    parse_limit,
    pread_int,
    read_text,
    write,
)
from memguard.kernel.names import (
    EVENT_CONTROL_FILE,
    FORCE_EMPTY_FILE,
    LIMIT_FILE,
    MEMSW_USAGE_FILE,
    OOM_CONTROL_FILE,
    STAT_FILE,
    USAGE_FILE,
)
from memguard.policy.model import MemorySnapshot


def _stat(fields: dict[str, int], name: str) -> int:
    """Prefer the hierarchical 'total_' counter; fall back to the local one."""
    return fields.get(f"total_{name}", fields.get(name, 0))


def read_snapshot(cgroup_dir: str) -> MemorySnapshot | None:
    """A fresh snapshot, or None when the cgroup has been removed."""
    usage_text = read_text(os.path.join(cgroup_dir, USAGE_FILE))
    limit_text = read_text(os.path.join(cgroup_dir, LIMIT_FILE))
    stat_text = read_text(os.path.join(cgroup_dir, STAT_FILE))
    oom_text = read_text(os.path.join(cgroup_dir, OOM_CONTROL_FILE))
    if usage_text is None or limit_text is None or stat_text is None or oom_text is None:
        return None
    stat = parse_flat_keyed(stat_text)
    oom = parse_flat_keyed(oom_text)
    limit = parse_limit(parse_int(limit_text, os.path.join(cgroup_dir, LIMIT_FILE)))
    hierarchical = parse_limit(stat.get("hierarchical_memory_limit", UNLIMITED_AT_BYTES))
    if hierarchical is not None:
        limit = hierarchical if limit is None else min(limit, hierarchical)
    return MemorySnapshot(
        usage_bytes=parse_int(usage_text, os.path.join(cgroup_dir, USAGE_FILE)),
        limit_bytes=limit,
        cache_bytes=_stat(stat, "cache"),
        shmem_bytes=_stat(stat, "shmem"),
        oom_kill_count=oom.get("oom_kill", 0),
    )


def read_usage(cgroup_dir: str) -> int | None:
    text = read_text(os.path.join(cgroup_dir, USAGE_FILE))
    return None if text is None else parse_int(text, os.path.join(cgroup_dir, USAGE_FILE))


def open_usage(cgroup_dir: str) -> int | None:
    """An fd on memory.usage_in_bytes for cheap repeated reads, or None when gone."""
    return open_reading(os.path.join(cgroup_dir, USAGE_FILE))


def pread_usage(fd: int) -> int | None:
    return pread_int(fd, USAGE_FILE)


def read_oom_control(cgroup_dir: str) -> dict[str, int] | None:
    """memory.oom_control: oom_kill_disable, under_oom, oom_kill; None when gone."""
    text = read_text(os.path.join(cgroup_dir, OOM_CONTROL_FILE))
    return None if text is None else parse_flat_keyed(text)


def set_oom_kill_disable(cgroup_dir: str, disable: bool) -> bool:
    """oom_kill_disable 1: at the limit the kernel parks the allocating tasks (and
    notifies the OOM eventfd) instead of killing; False when the cgroup is gone."""
    return write(os.path.join(cgroup_dir, OOM_CONTROL_FILE), b"1" if disable else b"0")


def _register(eventfd: int, cgroup_dir: str, watched_file: str, argument: str) -> bool:
    try:
        watched_fd = os.open(os.path.join(cgroup_dir, watched_file), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        if error.errno in GONE_ERRNOS:
            return False
        raise kernel_error(f"open {cgroup_dir}/{watched_file}", error) from error
    try:
        line = f"{eventfd} {watched_fd}{argument}".encode()
        return write(os.path.join(cgroup_dir, EVENT_CONTROL_FILE), line)
    finally:
        os.close(watched_fd)


def register_threshold(eventfd: int, cgroup_dir: str, threshold_bytes: int) -> bool:
    """Arm a usage threshold on eventfd; False when the cgroup is gone."""
    return _register(eventfd, cgroup_dir, USAGE_FILE, f" {threshold_bytes}")


def register_oom(eventfd: int, cgroup_dir: str) -> bool:
    """Be told of OOM in the cgroup on eventfd; False when the cgroup is gone."""
    return _register(eventfd, cgroup_dir, OOM_CONTROL_FILE, "")


def force_empty(cgroup_dir: str) -> bool:
    """Reclaim the cgroup's page cache (blocking); False when it is gone."""
    return write(os.path.join(cgroup_dir, FORCE_EMPTY_FILE), b"0")


def read_swap(cgroup_dir: str) -> tuple[int, int] | None:
    """(memory.usage_in_bytes, swap) in bytes; None when the cgroup is gone.

    usage_in_bytes does not count swap. memory.stat has `swap` (this cgroup's
    own pages) and `total_swap` (with its descendants, as usage_in_bytes counts
    them) only with swap accounting (memory.memsw.* present); the hierarchical
    one is used, like the other counters here. Without accounting: 0 swap."""
    usage = read_usage(cgroup_dir)
    stat_text = read_text(os.path.join(cgroup_dir, STAT_FILE))
    if usage is None or stat_text is None:
        return None
    return usage, _stat(parse_flat_keyed(stat_text), "swap")


def swap_accounted(cgroup_dir: str) -> bool:
    """The kernel accounts swap per cgroup here (memory.memsw.usage_in_bytes exists)."""
    return os.path.exists(os.path.join(cgroup_dir, MEMSW_USAGE_FILE))
