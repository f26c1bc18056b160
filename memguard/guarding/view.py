"""What each guard knows now, as frozen rows (`memguard status`, /status).

Read from what the guards already hold - their last full reading, the latest
usage sample and fill rate of their state, their threshold and their last
report - never from cgroupfs: looking costs the guards nothing, and nothing is
read on anyone's kill path. The latest usage is the newest reading the guard
made (a light one on a kernel wake-up counts); on cgroup v1 a calm guard reads
only when the kernel signals a level or at its re-check, so every row says how
old its reading is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from memguard.guarding.guard import Guard
from memguard.policy.kinds import ReportKind
from memguard.policy.paths import ContainerRef


@dataclass(frozen=True, slots=True)
class LastAction:
    kind: ReportKind
    action: str  # "flushed", "killed", "would kill", ...
    dry_run: bool
    wall_time_s: float  # time.time() when it happened


@dataclass(frozen=True, slots=True)
class ContainerView:
    cgroup: str
    ref: ContainerRef
    armed: bool
    usage_bytes: int | None  # None: not read yet
    limit_bytes: int | None  # None: unlimited (or not read yet)
    threshold_bytes: int | None  # None: not armed, or unlimited
    cache_bytes: int | None  # page cache (shmem included) at the last full reading
    reclaimable_cache_bytes: int | None
    fill_rate_bytes_s: float | None  # None: unknown (no two readings close together)
    read_age_s: float | None  # how long ago the usage was read
    last_action: LastAction | None

    @property
    def closeness(self) -> float:
        """usage / threshold (1.0: at the threshold); -1 without both."""
        if self.usage_bytes is None or not self.threshold_bytes:
            return -1.0
        return self.usage_bytes / self.threshold_bytes


def view_of(guard: Guard, now_s: float) -> ContainerView:
    """One guard's row; now_s on the trio clock (its state's time base)."""
    state, snapshot, report = guard.state, guard.last_snapshot, guard.last_report
    # The newer of the last full reading and the last rate sample (a light read of
    # usage alone). Not the sample alone: readings closer together than the rate's
    # minimum gap are no sample, and the row showed usage from before a write
    # beside cache from after it.
    usage, read_at_s = state.sample_usage_bytes, state.sample_at_s
    snapshot_at_s = guard.last_snapshot_at_s
    if snapshot is not None and (
        usage is None
        or read_at_s is None
        or (snapshot_at_s is not None and snapshot_at_s >= read_at_s)
    ):
        usage, read_at_s = snapshot.usage_bytes, snapshot_at_s
    last = None
    if report is not None:
        last = LastAction(report.kind, report.action, report.dry_run, report.wall_time_s)
    return ContainerView(
        cgroup=guard.cgroup_dir,
        ref=guard.ref,
        armed=guard.armed,
        usage_bytes=usage,
        limit_bytes=None if snapshot is None else snapshot.limit_bytes,
        threshold_bytes=guard.armed_threshold_bytes,
        cache_bytes=None if snapshot is None else snapshot.cache_bytes,
        reclaimable_cache_bytes=None if snapshot is None else snapshot.reclaimable_cache_bytes,
        fill_rate_bytes_s=state.rate_bytes_s,
        read_age_s=None if read_at_s is None else max(0.0, now_s - read_at_s),
        last_action=last,
    )


def closest_first(views: Iterable[ContainerView]) -> list[ContainerView]:
    """Nearest the threshold first; those without one after, biggest usage first."""
    return sorted(views, key=lambda v: (-v.closeness, -(v.usage_bytes or 0), v.cgroup))
