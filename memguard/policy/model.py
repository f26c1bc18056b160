"""Frozen data the policy core reads: memory snapshots, processes, settings."""

from __future__ import annotations

import enum
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

# cgroup v1 checks thresholds every 128 page events per CPU (memcontrol.c,
# THRESHOLDS_EVENTS_TARGET): usage can run this far past a threshold per CPU
# before the event fires.
THRESHOLD_CHECK_PAGES_PER_CPU = 128


class Policy(enum.Enum):
    """What to do when usage stays over the threshold after a flush."""

    PROCESS = "process"  # SIGKILL the process with the highest oom_score
    CONTAINER = "container"  # SIGKILL every process of the cgroup
    NOOP = "noop"  # report only
    # SIGTERM the main process at the soft level (or evict/delete the pod:
    # --graceful-via), then the container kill at the hard threshold or when the
    # grace period is over
    GRACEFUL = "graceful"
    EVICT = "evict"  # evict the pod at the hard threshold; the container kill if refused


class GracefulVia(enum.Enum):
    """--graceful-via: how the graceful policy asks a container to stop."""

    PROCESS = "process"  # SIGTERM the container's main process (pidfd)
    EVICT = "evict"  # the pod's Eviction (honours PodDisruptionBudgets, its grace period)
    DELETE = "delete"  # delete the pod


DEFAULT_GRACE_PERIOD_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """One reading of a cgroup's memory; every size in bytes."""

    usage_bytes: int
    limit_bytes: int | None  # None: unlimited
    cache_bytes: int = 0  # page cache, shmem included (v1 'total_cache')
    shmem_bytes: int = 0  # tmpfs/shm: counted as cache but not reclaimable without swap
    oom_kill_count: int = 0  # kernel OOM kills in this cgroup so far

    @property
    def reclaimable_cache_bytes(self) -> int:
        """Page cache a flush (or the kernel) can drop: cache minus shmem."""
        return max(0, self.cache_bytes - self.shmem_bytes)


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process as /proc shows it."""

    pid: int
    comm: str
    oom_score: int
    oom_score_adj: int
    rss_bytes: int = 0
    ppid: int = 0  # the parent (the graceful policy's SIGTERM target: the topmost member)


@dataclass(frozen=True, slots=True)
class CacheLimit:
    """--flush-cache-above: a share of the limit (ratio) or a size (bytes)."""

    ratio: float | None = None
    size_bytes: int | None = None

    def describe(self) -> str:
        if self.ratio is not None:
            return f"{self.ratio:.0%} of the limit"
        return f"{self.size_bytes} bytes"


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """The policy-relevant part of the configuration (built by memguard.cli.config)."""

    policy: Policy = Policy.CONTAINER
    dry_run: bool = False
    margin_ratio: float = 0.02
    min_margin_bytes: int = 1 * MIB
    max_margin_bytes: int = 50 * MIB
    # nr_cpus x 128 pages: the kernel's threshold check granularity (see above)
    check_granularity_bytes: int = 0
    max_cache_ratio: float = 0.5
    flush_cooldown_s: float = 10.0
    cooldown_s: float = 5.0
    recheck_interval_s: float = 60.0
    hot_recheck_interval_s: float = 0.1
    # The page-cache flusher (policy.cacheflush): off when cache_flush_above is None.
    cache_flush_above: CacheLimit | None = None
    cache_flush_interval_s: float = 30.0
    # The graceful policy: soft level = limit - clamp(limit x soft_margin_ratio,
    # min, max), always under the threshold (policy.margin.Levels.soft).
    soft_margin_ratio: float = 0.10
    min_soft_margin_bytes: int = 16 * MIB
    max_soft_margin_bytes: int = 512 * MIB
    grace_period_s: float | None = None  # None: the pod's, else DEFAULT_GRACE_PERIOD_S
    graceful_via: GracefulVia = GracefulVia.PROCESS
    # Per container (policy.effective, from its pod's ContainerOverrides): why
    # memguard must not act here (report only); None: it may act.
    protected: str | None = None


def check_granularity_bytes(nr_cpus: int, page_bytes: int) -> int:
    """How far past a v1 threshold usage may get before the event fires."""
    return nr_cpus * THRESHOLD_CHECK_PAGES_PER_CPU * page_bytes
