"""The fake kernel: a cgroup v1 memory directory kept as ordinary files.

A fake cgroup holds the same files memguard reads on a real one
(memory.usage_in_bytes, memory.limit_in_bytes, memory.stat, memory.oom_control,
cgroup.procs, ...), so memguard's real readers work on it unchanged. What the
kernel would account is kept in `memguard.fake.json` beside them: anonymous
memory charged per process, clean and dirty page cache, shmem, OOM kills.
memory.limit_in_bytes itself is the source of truth for the limit, so
`echo 200Mi > memory.limit_in_bytes`-style edits work as on a real cgroup.

Every change rewrites the derived files by rename, so readers never see a
half-written file and inotify reports IN_MOVED_TO; changes are serialised with
flock on the state file. The fake "kernel effects" memguard relies on are here:
reclaim() is what force_empty does, settle() uncharges processes that died.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from memguard.kernel import cgroup_v1
from memguard.kernel.procfs import is_alive

STATE_FILE = "memguard.fake.json"
MARKER_FILE = "memguard-fake-tree"
UNLIMITED_TEXT = "9223372036854771712"


@dataclass
class FakeMemory:
    limit_bytes: int | None = None
    anon_by_pid: dict[int, int] = field(default_factory=dict)
    clean_cache_bytes: int = 0  # a flush drops it
    dirty_cache_bytes: int = 0  # under writeback: a flush cannot drop it yet
    shmem_bytes: int = 0  # tmpfs: cache that nothing drops without swap
    pids: list[int] = field(default_factory=list)
    oom_kills: int = 0

    @property
    def anon_bytes(self) -> int:
        return sum(self.anon_by_pid.values())

    @property
    def cache_bytes(self) -> int:
        return self.clean_cache_bytes + self.dirty_cache_bytes + self.shmem_bytes

    @property
    def usage_bytes(self) -> int:
        return self.anon_bytes + self.cache_bytes


def _write_atomic(path: str, text: str) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def _stat_text(memory: FakeMemory) -> str:
    local = {
        "cache": memory.cache_bytes,
        "rss": memory.anon_bytes,
        "shmem": memory.shmem_bytes,
        "dirty": memory.dirty_cache_bytes,
        "writeback": 0,
        "inactive_file": memory.clean_cache_bytes,
        "active_file": memory.dirty_cache_bytes,
        "inactive_anon": memory.anon_bytes + memory.shmem_bytes,
        "active_anon": 0,
    }
    lines = [f"{key} {value}" for key, value in local.items()]
    limit = memory.limit_bytes
    lines.append(f"hierarchical_memory_limit {UNLIMITED_TEXT if limit is None else limit}")
    lines += [f"total_{key} {value}" for key, value in local.items()]
    return "\n".join(lines) + "\n"


def write(cgroup_dir: str, memory: FakeMemory) -> None:
    """Write the state and every derived kernel file of one fake cgroup."""
    state = {
        "anon_by_pid": {str(pid): size for pid, size in memory.anon_by_pid.items()},
        "clean_cache_bytes": memory.clean_cache_bytes,
        "dirty_cache_bytes": memory.dirty_cache_bytes,
        "shmem_bytes": memory.shmem_bytes,
        "pids": memory.pids,
        "oom_kills": memory.oom_kills,
    }
    path = os.path.join
    limit_text = UNLIMITED_TEXT if memory.limit_bytes is None else str(memory.limit_bytes)
    _write_atomic(path(cgroup_dir, STATE_FILE), json.dumps(state))
    _write_atomic(path(cgroup_dir, cgroup_v1.LIMIT_FILE), limit_text + "\n")
    _write_atomic(path(cgroup_dir, cgroup_v1.STAT_FILE), _stat_text(memory))
    oom = f"oom_kill_disable 0\nunder_oom 0\noom_kill {memory.oom_kills}\n"
    _write_atomic(path(cgroup_dir, cgroup_v1.OOM_CONTROL_FILE), oom)
    _write_atomic(path(cgroup_dir, cgroup_v1.PROCS_FILE), "".join(f"{p}\n" for p in memory.pids))
    _write_atomic(path(cgroup_dir, cgroup_v1.USAGE_FILE), f"{memory.usage_bytes}\n")


def _write_controls(cgroup_dir: str) -> None:
    for control in (cgroup_v1.FORCE_EMPTY_FILE, cgroup_v1.EVENT_CONTROL_FILE):
        with open(os.path.join(cgroup_dir, control), "w"):
            pass


def create(cgroup_dir: str, memory: FakeMemory) -> None:
    """Make a fake cgroup directory holding memory, complete with its files.

    Like mkdir on cgroupfs, the directory appears with all its files at once:
    it is built under a temporary name and renamed into place. An existing
    directory (a pod created by path for its container) gets its files in place.
    """
    if os.path.isdir(cgroup_dir):
        _write_controls(cgroup_dir)
        write(cgroup_dir, memory)
        return
    parent, name = os.path.split(cgroup_dir.rstrip("/"))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.creating{os.getpid()}")
    os.mkdir(staging)
    _write_controls(staging)
    write(staging, memory)
    os.rename(staging, cgroup_dir)


def read(cgroup_dir: str) -> FakeMemory | None:
    """The state of one fake cgroup, or None when it is gone."""
    state_text = cgroup_v1.read_text(os.path.join(cgroup_dir, STATE_FILE))
    limit_text = cgroup_v1.read_text(os.path.join(cgroup_dir, cgroup_v1.LIMIT_FILE))
    if state_text is None or limit_text is None:
        return None
    state = json.loads(state_text)
    limit_path = os.path.join(cgroup_dir, cgroup_v1.LIMIT_FILE)
    return FakeMemory(
        limit_bytes=cgroup_v1.parse_limit(cgroup_v1.parse_int(limit_text, limit_path)),
        anon_by_pid={int(pid): size for pid, size in state["anon_by_pid"].items()},
        clean_cache_bytes=state["clean_cache_bytes"],
        dirty_cache_bytes=state["dirty_cache_bytes"],
        shmem_bytes=state["shmem_bytes"],
        pids=list(state["pids"]),
        oom_kills=state["oom_kills"],
    )


@contextmanager
def locked(cgroup_dir: str) -> Iterator[FakeMemory | None]:
    """Read-modify-write one fake cgroup under its lock; written back if changed."""
    try:
        lock_fd = os.open(os.path.join(cgroup_dir, STATE_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        memory = read(cgroup_dir)
        before = copy.deepcopy(memory)
        yield memory
        if memory is not None and memory != before and os.path.isdir(cgroup_dir):
            write(cgroup_dir, memory)
    finally:
        os.close(lock_fd)


def settle(memory: FakeMemory) -> bool:
    """Uncharge and drop processes that have died, as the kernel does; True if any."""
    dead = [pid for pid in memory.pids if not is_alive(pid)]
    for pid in dead:
        memory.pids.remove(pid)
        memory.anon_by_pid.pop(pid, None)
    return bool(dead)


def reclaim(memory: FakeMemory) -> int:
    """What memory.force_empty does here: drop clean page cache; bytes freed."""
    freed = memory.clean_cache_bytes
    memory.clean_cache_bytes = 0
    return freed


def make_root(root: str) -> None:
    """An empty fake tree root (the marker only), for trees built cgroup by cgroup."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, MARKER_FILE), "w") as file:
        file.write('{"version": 1, "processes": [], "containers": []}')


def find_marker(path: str) -> str | None:
    """The fake tree root holding path (itself or an ancestor), if any."""
    current = os.path.abspath(path)
    while True:
        if os.path.isfile(os.path.join(current, MARKER_FILE)):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
