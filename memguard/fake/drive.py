"""`memguard fake drive`: the fake kernel's allocator and OOM killer.

Each step charges memory of one kind to a fake container: anon (to its worker
process), clean page cache (a flush drops it), dirty cache (a flush cannot
drop it yet) or shmem. Like the kernel, at the limit it first reclaims clean
cache, then OOM-kills the member with the highest oom_score (only processes
this tree's `fake init` started) and counts it in memory.oom_control.
"""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from memguard.fake import model, tree
from memguard.kernel.procfs import read_procs_info
from memguard.policy.victim import pick_victim

# Anon memory of a cgroup without processes is charged here (it never dies).
UNATTRIBUTED_PID = 0


class Kind(enum.Enum):
    ANON = "anon"
    CACHE = "cache"
    DIRTY = "dirty"
    SHMEM = "shmem"


@dataclass(frozen=True)
class StepResult:
    usage_bytes: int
    limit_bytes: int | None
    members: int
    kernel_oom_pid: int | None = None


def _charge(memory: model.FakeMemory, kind: Kind, size_bytes: int) -> None:
    if kind is Kind.ANON:
        worker = memory.pids[-1] if memory.pids else UNATTRIBUTED_PID
        memory.anon_by_pid[worker] = memory.anon_by_pid.get(worker, 0) + size_bytes
    elif kind is Kind.CACHE:
        memory.clean_cache_bytes += size_bytes
    elif kind is Kind.DIRTY:
        memory.dirty_cache_bytes += size_bytes
    else:
        memory.shmem_bytes += size_bytes


def _enforce_limit(root: str, memory: model.FakeMemory) -> int | None:
    """Reclaim, then OOM-kill, as the kernel does at the limit; the pid killed."""
    limit = memory.limit_bytes
    if limit is None or memory.usage_bytes <= limit:
        return None
    memory.limit_hits += 1  # v2 memory.events "max": usage reached the limit
    over = memory.usage_bytes - limit
    memory.clean_cache_bytes -= min(over, memory.clean_cache_bytes)
    if memory.usage_bytes <= limit:
        return None
    killable = [p for p in memory.pids if tree.started_here(root, p)]
    victim = pick_victim(read_procs_info(killable), frozenset({os.getpid()}))
    if victim is None:
        return None
    os.kill(victim.pid, signal.SIGKILL)
    memory.oom_kills += 1
    memory.pids.remove(victim.pid)
    memory.anon_by_pid.pop(victim.pid, None)
    return victim.pid


def step(root: str, cgroup_dir: str, kind: Kind, size_bytes: int) -> StepResult | None:
    """Charge size_bytes of kind to cgroup_dir; None when the cgroup is gone."""
    return step_many(root, cgroup_dir, [(kind, size_bytes)])


def step_many(root: str, cgroup_dir: str, charges: Sequence[tuple[Kind, int]]) -> StepResult | None:
    """Several charges in one write of the cgroup's files (a reader never sees
    half of them); None when the cgroup is gone."""
    with model.locked(cgroup_dir) as memory:
        if memory is None:
            return None
        model.settle(memory)
        for kind, size_bytes in charges:
            _charge(memory, kind, size_bytes)
        killed = _enforce_limit(root, memory)
        return StepResult(memory.usage_bytes, memory.limit_bytes, len(memory.pids), killed)


def writeback(cgroup_dir: str) -> None:
    """Dirty cache finished writing back: it becomes clean (reclaimable)."""
    with model.locked(cgroup_dir) as memory:
        if memory is not None:
            memory.clean_cache_bytes += memory.dirty_cache_bytes
            memory.dirty_cache_bytes = 0
