"""What a guard does on a wake-up: the decision table.

    usage < threshold (or no limit)            -> IDLE
    acted less than cooldown_s ago             -> COOLDOWN until it ends
    not flushed within flush_cooldown_s and
      usage - reclaimable cache < threshold    -> FLUSH, then decide again
    reclaimable cache > max_cache_ratio x usage -> SKIP (the kernel can still
                                                  reclaim it; look again soon)
    otherwise                                  -> ACT (the configured policy)

Downward crossings, cgroup removal and limit changes also wake a guard, so every
decision starts from a fresh snapshot. A guard over its threshold that did not
act looks again after hot_recheck_interval_s: v1 thresholds fire on crossings
only, and usage pinned at the limit while cache turns into anon crosses nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from memguard.policy.model import GuardSettings, MemorySnapshot


class Step(enum.Enum):
    IDLE = "idle"
    COOLDOWN = "cooldown"
    FLUSH = "flush"
    SKIP = "skip"
    ACT = "act"


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    reason: str
    # The guard looks again at this time at the latest (None: recheck interval).
    retry_at_s: float | None = None


@dataclass(frozen=True, slots=True)
class GuardState:
    """What a guard remembers between wake-ups."""

    last_flush_at_s: float | None = None  # the OOM path's last flush
    last_cache_flush_at_s: float | None = None  # the cache flusher's (--flush-cache-above)
    cooldown_until_s: float | None = None
    skip_reported_at_s: float | None = None
    oom_kills_seen: int | None = None


def decide(
    snapshot: MemorySnapshot,
    threshold_bytes: int | None,
    state: GuardState,
    settings: GuardSettings,
    now_s: float,
) -> Decision:
    """The next step for a guard given a fresh snapshot."""
    if threshold_bytes is None:
        return Decision(Step.IDLE, "no memory limit")
    if snapshot.usage_bytes < threshold_bytes:
        return Decision(Step.IDLE, "usage below threshold")
    hot_retry_s = now_s + settings.hot_recheck_interval_s
    if state.cooldown_until_s is not None and now_s < state.cooldown_until_s:
        return Decision(Step.COOLDOWN, "cooling down after an action", state.cooldown_until_s)
    if flush_allowed(state, settings, now_s) and flush_could_help(snapshot, threshold_bytes):
        return Decision(Step.FLUSH, "usage at or over threshold", hot_retry_s)
    cache_ratio = snapshot.reclaimable_cache_bytes / max(snapshot.usage_bytes, 1)
    if cache_ratio > settings.max_cache_ratio:
        reason = (
            f"reclaimable cache is {cache_ratio:.0%} of usage"
            f" (> {settings.max_cache_ratio:.0%}): left to the kernel's reclaim"
        )
        return Decision(Step.SKIP, reason, hot_retry_s)
    return Decision(Step.ACT, _act_reason(state, settings, now_s), hot_retry_s)


def _act_reason(state: GuardState, settings: GuardSettings, now_s: float) -> str:
    if flush_allowed(state, settings, now_s):
        return "over threshold, too little page cache for a flush to help"
    assert state.last_flush_at_s is not None
    return f"still over threshold {now_s - state.last_flush_at_s:.1f}s after a flush"


def flush_request_bytes(snapshot: MemorySnapshot, threshold_bytes: int) -> int:
    """What a bounded reclaim (v2 memory.reclaim) asks for: enough to bring usage
    one margin under the threshold, never more than the reclaimable cache."""
    margin = (snapshot.limit_bytes or threshold_bytes) - threshold_bytes
    wanted = snapshot.usage_bytes - (threshold_bytes - margin)
    return max(0, min(wanted, snapshot.reclaimable_cache_bytes))


def flush_could_help(snapshot: MemorySnapshot, threshold_bytes: int) -> bool:
    """A flush can only help if dropping all reclaimable cache gets under threshold.

    Skipping a hopeless flush keeps an anonymous-memory hog's kill off the
    force_empty path (milliseconds to seconds in the kernel).
    """
    return snapshot.usage_bytes - snapshot.reclaimable_cache_bytes < threshold_bytes


def flush_allowed(state: GuardState, settings: GuardSettings, now_s: float) -> bool:
    if state.last_flush_at_s is None:
        return True
    return now_s - state.last_flush_at_s >= settings.flush_cooldown_s


def after_flush(state: GuardState, now_s: float) -> GuardState:
    return replace(state, last_flush_at_s=now_s)


def after_action(state: GuardState, settings: GuardSettings, now_s: float) -> GuardState:
    return replace(state, cooldown_until_s=now_s + settings.cooldown_s)


def should_report_skip(state: GuardState, settings: GuardSettings, now_s: float) -> bool:
    """Skips repeat on every hot recheck; report one per cooldown_s at most."""
    last = state.skip_reported_at_s
    return last is None or now_s - last >= settings.cooldown_s


def after_skip_report(state: GuardState, now_s: float) -> GuardState:
    return replace(state, skip_reported_at_s=now_s)


def new_oom_kills(state: GuardState, snapshot: MemorySnapshot) -> tuple[int, GuardState]:
    """How many kernel OOM kills happened since the last look (0 on the first)."""
    seen = state.oom_kills_seen
    current = snapshot.oom_kill_count
    fresh = 0 if seen is None else max(0, current - seen)
    return fresh, replace(state, oom_kills_seen=current)
