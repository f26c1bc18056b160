"""cgroup v2 memory files for one cgroup directory.

Kernel facts (measured in the test VM, Debian 6.1, and documented in
Documentation/admin-guide/cgroup-v2.rst):
- No usage-threshold eventfd exists. memory.events (low, high, max, oom,
  oom_kill, oom_group_kill; hierarchical) changes are announced with
  IN_MODIFY, both on the file and on its directory's watch.
- memory.max / memory.high read "max" when unlimited.
- memory.stat is flushed lazily: decide on memory.current, read the stat for
  the split (anon, file, shmem, file_dirty, file_writeback, inactive_file).
- memory.reclaim takes a byte count; EAGAIN when it could not reclaim all of
  it is a normal outcome (it reclaimed what it could).
- cgroup.kill ("1") SIGKILLs every process of the cgroup, race-free.
- The effective limit is the smallest memory.max on the way up to the root
  (the pod's own cgroup carries the pod limit).
"""

from __future__ import annotations

import errno
import os

from memguard.kernel.cgroupfs import (
    open_reading,
    parse_flat_keyed,
    parse_int,
    pread_int,
    read_text,
    write,
)
from memguard.kernel.names import (
    CURRENT_FILE,
    EVENTS_FILE,
    HIGH_FILE,
    KILL_FILE,
    MAX_FILE,
    RECLAIM_FILE,
    STAT_FILE,
    SWAP_CURRENT_FILE,
)
from memguard.policy.model import MemorySnapshot

MAX_ANCESTORS = 16  # kubepods.slice/…/pod…/container is 4 deep; a bound, not a guess


def parse_max(text: str, path: str) -> int | None:
    """memory.max / memory.high: bytes, or None for "max"."""
    stripped = text.strip()
    return None if stripped == "max" else parse_int(stripped, path)


def read_max(cgroup_dir: str, name: str = MAX_FILE) -> tuple[bool, int | None]:
    """(present, bytes or None for "max") of memory.max or memory.high."""
    path = os.path.join(cgroup_dir, name)
    text = read_text(path)
    if text is None:
        return False, None
    return True, parse_max(text, path)


def effective_limit(cgroup_dir: str) -> int | None:
    """The smallest memory.max from cgroup_dir up to the root (None: unlimited)."""
    limit: int | None = None
    current = cgroup_dir
    for _ in range(MAX_ANCESTORS):
        present, value = read_max(current)
        if not present:
            break  # the root cgroup has no memory.max
        if value is not None:
            limit = value if limit is None else min(limit, value)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return limit


def read_snapshot(cgroup_dir: str) -> MemorySnapshot | None:
    """A fresh snapshot, or None when the cgroup is gone (or has no memory files)."""
    current_text = read_text(os.path.join(cgroup_dir, CURRENT_FILE))
    stat_text = read_text(os.path.join(cgroup_dir, STAT_FILE))
    events_text = read_text(os.path.join(cgroup_dir, EVENTS_FILE))
    present, _ = read_max(cgroup_dir)
    if current_text is None or stat_text is None or events_text is None or not present:
        return None
    stat = parse_flat_keyed(stat_text)
    events = parse_flat_keyed(events_text)
    return MemorySnapshot(
        usage_bytes=parse_int(current_text, os.path.join(cgroup_dir, CURRENT_FILE)),
        limit_bytes=effective_limit(cgroup_dir),
        cache_bytes=stat.get("file", 0),
        shmem_bytes=stat.get("shmem", 0),
        oom_kill_count=events.get("oom_kill", 0),
    )


def reclaim(cgroup_dir: str, request_bytes: int) -> bool:
    """Ask the kernel to reclaim request_bytes (blocking); False when gone.

    EAGAIN (could not reclaim all of it) counts as done: it reclaimed what it could.
    """
    if request_bytes <= 0:
        return os.path.isdir(cgroup_dir)
    return write(
        os.path.join(cgroup_dir, RECLAIM_FILE),
        str(request_bytes).encode(),
        frozenset({errno.EAGAIN}),
    )


def kill_all(cgroup_dir: str) -> bool:
    """SIGKILL every process of the cgroup via cgroup.kill; False when gone."""
    return write(os.path.join(cgroup_dir, KILL_FILE), b"1")


def write_high(cgroup_dir: str, high_bytes: int | None) -> bool:
    """Set memory.high (None: "max"); False when gone."""
    value = b"max" if high_bytes is None else str(high_bytes).encode()
    return write(os.path.join(cgroup_dir, HIGH_FILE), value)


def read_setting(cgroup_dir: str, file: str) -> str | None:
    """A control file's text, stripped (e.g. memory.high "max"); None when absent."""
    text = read_text(os.path.join(cgroup_dir, file))
    return None if text is None else text.strip()


def write_setting(cgroup_dir: str, file: str, value: str) -> bool:
    """Write a control file (memory.high, memory.swap.max, ...); False when gone.

    A value the kernel refuses raises KernelError (EINVAL). Writing memory.high
    under the current usage reclaims in the writer: call it off the trio thread.
    """
    return write(os.path.join(cgroup_dir, file), value.encode())


def read_current(cgroup_dir: str) -> int | None:
    text = read_text(os.path.join(cgroup_dir, CURRENT_FILE))
    return None if text is None else parse_int(text, os.path.join(cgroup_dir, CURRENT_FILE))


def open_current(cgroup_dir: str) -> int | None:
    """An fd on memory.current for cheap repeated reads (pread), or None when gone."""
    return open_reading(os.path.join(cgroup_dir, CURRENT_FILE))


def pread_current(fd: int) -> int | None:
    """memory.current through an open fd (one syscall); None when the cgroup is gone."""
    return pread_int(fd, CURRENT_FILE)


def read_swap(cgroup_dir: str) -> tuple[int, int] | None:
    """(memory.current, memory.swap.current) in bytes; None when the cgroup is gone.

    memory.current does not count swap. Without swap accounting (no
    CONFIG_MEMCG_SWAP, swapaccount=0) memory.swap.current is absent: 0 swap."""
    usage = read_current(cgroup_dir)
    if usage is None:
        return None
    path = os.path.join(cgroup_dir, SWAP_CURRENT_FILE)
    text = read_text(path)
    return usage, 0 if text is None else parse_int(text, path)
