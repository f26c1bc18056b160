"""The periodic page-cache flusher (kube-node-memory-flusher's job), pure.

A container whose reclaimable page cache (cache minus shmem) is above
--flush-cache-above (a share of its limit, or bytes) is flushed: all of its
cache on v1 (force_empty), the excess on v2 (memory.reclaim). At most once per
--flush-cooldown after any flush; the OOM path's own flushes are not held back
by the flusher's (an emergency beats a routine clean-up). A share of an unlimited
cgroup has no meaning: such cgroups are skipped (the guard says so once; the
seed flusher silently never fired).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from memguard.policy.model import CacheLimit, GuardSettings, MemorySnapshot
from memguard.policy.state import GuardState


class CacheStep(enum.Enum):
    NONE = "none"
    FLUSH = "flush"
    UNLIMITED = "unlimited"  # a share of no limit: skipped


@dataclass(frozen=True, slots=True)
class CacheDecision:
    step: CacheStep
    request_bytes: int = 0  # v2: how much to reclaim (the excess)
    above_bytes: int | None = None  # the cache limit in bytes


def cache_limit_bytes(limit: CacheLimit, cgroup_limit_bytes: int | None) -> int | None:
    if limit.ratio is None:
        return limit.size_bytes
    if cgroup_limit_bytes is None:
        return None
    return int(cgroup_limit_bytes * limit.ratio)


def decide_cache_flush(
    snapshot: MemorySnapshot,
    limit: CacheLimit | None,
    state: GuardState,
    settings: GuardSettings,
    now_s: float,
) -> CacheDecision:
    if limit is None:
        return CacheDecision(CacheStep.NONE)
    above = cache_limit_bytes(limit, snapshot.limit_bytes)
    if above is None:
        return CacheDecision(CacheStep.UNLIMITED)
    cache = snapshot.reclaimable_cache_bytes
    if cache <= above or not _cache_flush_allowed(state, settings, now_s):
        return CacheDecision(CacheStep.NONE, above_bytes=above)
    return CacheDecision(CacheStep.FLUSH, cache - above, above)


def _cache_flush_allowed(state: GuardState, settings: GuardSettings, now_s: float) -> bool:
    """One --flush-cooldown after any flush (its own or the OOM path's)."""
    last = state.last_cache_flush_at_s
    own_ok = last is None or now_s - last >= settings.flush_cooldown_s
    oom_last = state.last_flush_at_s
    return own_ok and (oom_last is None or now_s - oom_last >= settings.flush_cooldown_s)


def after_cache_flush(state: GuardState, now_s: float) -> GuardState:
    """The OOM path keeps its own allowance: an emergency flush is never held back
    by a routine one."""
    return replace(state, last_cache_flush_at_s=now_s)
