"""The fake kernel: a cgroup v1 or v2 memory directory kept as ordinary files.

A fake cgroup holds the same files memguard reads on a real one (v1:
memory.usage_in_bytes, memory.limit_in_bytes, memory.stat, memory.oom_control;
v2: memory.current, memory.max, memory.stat, memory.events; cgroup.procs ...:
memguard.fake.files), so memguard's real readers work on it unchanged. What
the kernel would account is kept in `memguard.fake.json` beside them:
anonymous memory charged per process, clean and dirty page cache, shmem, OOM
kills. The limit file itself (memory.limit_in_bytes / memory.max) is the source
of truth for the limit, so `echo 200M > memory.max`-style edits work.

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

from memguard.fake import files
from memguard.kernel import cgroupfs
from memguard.kernel.procfs import is_alive

STATE_FILE = "memguard.fake.json"
MARKER_FILE = "memguard-fake-tree"


@dataclass
class FakeMemory:
    limit_bytes: int | None = None
    anon_by_pid: dict[int, int] = field(default_factory=dict)
    clean_cache_bytes: int = 0  # a flush drops it
    dirty_cache_bytes: int = 0  # under writeback: a flush cannot drop it yet
    shmem_bytes: int = 0  # tmpfs: cache that nothing drops without swap
    pids: list[int] = field(default_factory=list)
    oom_kills: int = 0
    limit_hits: int = 0  # v2 memory.events "max"
    version: int = 1  # 1: cgroup v1 files, 2: cgroup v2 files
    swap_bytes: int = 0  # swapped out (v1 memory.stat swap, v2 memory.swap.current)

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


def write(cgroup_dir: str, memory: FakeMemory) -> None:
    """Write the state and every derived kernel file of one fake cgroup."""
    state = {
        "anon_by_pid": {str(pid): size for pid, size in memory.anon_by_pid.items()},
        "clean_cache_bytes": memory.clean_cache_bytes,
        "dirty_cache_bytes": memory.dirty_cache_bytes,
        "shmem_bytes": memory.shmem_bytes,
        "pids": memory.pids,
        "oom_kills": memory.oom_kills,
        "limit_hits": memory.limit_hits,
        "version": memory.version,
        "swap_bytes": memory.swap_bytes,
    }
    _write_atomic(os.path.join(cgroup_dir, STATE_FILE), json.dumps(state))
    for name, text in files.kernel_files(memory).items():
        _write_atomic(os.path.join(cgroup_dir, name), text)


def _write_controls(cgroup_dir: str, version: int) -> None:
    for control in files.control_files(version):
        with open(os.path.join(cgroup_dir, control), "w"):
            pass


def create(cgroup_dir: str, memory: FakeMemory) -> None:
    """Make a fake cgroup directory holding memory, complete with its files.

    Like mkdir on cgroupfs, the directory appears with all its files at once:
    it is built under a temporary name and renamed into place. An existing
    directory (a pod created by path for its container) gets its files in place.
    """
    if os.path.isdir(cgroup_dir):
        _write_controls(cgroup_dir, memory.version)
        write(cgroup_dir, memory)
        return
    parent, name = os.path.split(cgroup_dir.rstrip("/"))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.creating{os.getpid()}")
    os.mkdir(staging)
    _write_controls(staging, memory.version)
    write(staging, memory)
    os.rename(staging, cgroup_dir)


def read(cgroup_dir: str) -> FakeMemory | None:
    """The state of one fake cgroup, or None when it is gone."""
    state_text = cgroupfs.read_text(os.path.join(cgroup_dir, STATE_FILE))
    if state_text is None:
        return None
    state = json.loads(state_text)
    version = state.get("version", 1)
    limit_path = os.path.join(cgroup_dir, files.limit_file(version))
    limit_text = cgroupfs.read_text(limit_path)
    if limit_text is None:
        return None
    return FakeMemory(
        limit_bytes=files.parse_limit_text(version, limit_text, limit_path),
        anon_by_pid={int(pid): size for pid, size in state["anon_by_pid"].items()},
        clean_cache_bytes=state["clean_cache_bytes"],
        dirty_cache_bytes=state["dirty_cache_bytes"],
        shmem_bytes=state["shmem_bytes"],
        pids=list(state["pids"]),
        oom_kills=state["oom_kills"],
        limit_hits=state.get("limit_hits", 0),
        version=version,
        swap_bytes=state.get("swap_bytes", 0),
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


def reclaim(memory: FakeMemory, request_bytes: int | None = None) -> int:
    """What force_empty (all) or memory.reclaim (request_bytes) does here:
    drop clean page cache; the bytes freed."""
    limit = memory.clean_cache_bytes if request_bytes is None else request_bytes
    freed = min(memory.clean_cache_bytes, max(limit, 0))
    memory.clean_cache_bytes -= freed
    return freed


def make_root(root: str, cgroup_version: int = 1) -> None:
    """An empty fake tree root (the marker only), for trees built cgroup by cgroup."""
    os.makedirs(root, exist_ok=True)
    marker = {"version": 1, "cgroup_version": cgroup_version, "processes": [], "containers": []}
    write_marker(root, marker)


def write_marker(root: str, marker: dict[str, object]) -> None:
    """Write (or rewrite) root's marker by rename: never seen half written."""
    _write_atomic(os.path.join(root, MARKER_FILE), json.dumps(marker, indent=1))


def tree_cgroup_version(root: str) -> int:
    """The cgroup version a fake tree imitates (1 for trees without the field)."""
    with open(os.path.join(root, MARKER_FILE)) as file:
        return int(json.load(file).get("cgroup_version", 1))


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
