"""Fill rates and flush speed, learnt from readings (pure: the time is passed in).

The rate of usage comes from every reading (light ones too); the rate of what a
flush cannot drop (usage - reclaimable cache) from full readings only (a light
reading's cache figure is the last one read). Both are EWMAs over successive
readings; readings closer than MIN_SAMPLE_GAP_S are ignored, and a reading
further than MAX_SAMPLE_GAP_S from the last one makes the rate unknown again (an
average over a long quiet spell says nothing about a burst now: the next
reading, soon, gives the current rate). A flush's speed per MiB is learnt from
every measured flush of the cgroup.
"""

from __future__ import annotations

from dataclasses import replace

from memguard.policy.model import MIB, MemorySnapshot
from memguard.policy.state import GuardState

RATE_SMOOTHING = 0.5  # weight of the newest rate in the EWMA
MIN_SAMPLE_GAP_S = 0.0005  # readings closer than this say nothing about the rate
MAX_SAMPLE_GAP_S = 0.05  # readings further apart than this say nothing about it now


def new_oom_kills(state: GuardState, snapshot: MemorySnapshot) -> tuple[int, GuardState]:
    """How many kernel OOM kills happened since the last look (0 on the first)."""
    seen = state.oom_kills_seen
    current = snapshot.oom_kill_count
    fresh = 0 if seen is None else max(0, current - seen)
    return fresh, replace(state, oom_kills_seen=current)


def _ewma(
    last: tuple[int | None, float | None, float | None], value: int, now_s: float
) -> tuple[int | None, float | None, float | None]:
    """(value, at, rate) after one more reading; unchanged when too close to the last."""
    last_value, last_at, rate = last
    if last_value is None or last_at is None:
        return value, now_s, rate
    gap_s = now_s - last_at
    if gap_s < MIN_SAMPLE_GAP_S:
        return last
    if gap_s > MAX_SAMPLE_GAP_S:
        return value, now_s, None
    fresh = (value - last_value) / gap_s
    if rate is not None:
        fresh = RATE_SMOOTHING * fresh + (1 - RATE_SMOOTHING) * rate
    return value, now_s, fresh


def sampled(state: GuardState, snapshot: MemorySnapshot, now_s: float, light: bool) -> GuardState:
    """The fill rates, updated with one more reading (a light one: usage only)."""
    last = (state.sample_usage_bytes, state.sample_at_s, state.rate_bytes_s)
    usage, at_s, rate = _ewma(last, snapshot.usage_bytes, now_s)
    state = replace(state, sample_usage_bytes=usage, sample_at_s=at_s, rate_bytes_s=rate)
    if light:
        return state
    fixed = snapshot.usage_bytes - snapshot.reclaimable_cache_bytes
    last = (state.sample_fixed_bytes, state.sample_fixed_at_s, state.fixed_rate_bytes_s)
    fixed_now, fixed_at_s, fixed_rate = _ewma(last, fixed, now_s)
    return replace(
        state,
        sample_fixed_bytes=fixed_now,
        sample_fixed_at_s=fixed_at_s,
        fixed_rate_bytes_s=fixed_rate,
    )


def flush_measured(state: GuardState, duration_s: float, reclaimed_bytes: int) -> GuardState:
    """This cgroup's seconds per MiB of flush, updated with one measured flush."""
    if reclaimed_bytes < MIB:
        return state  # too little to say anything
    measured = duration_s / (reclaimed_bytes / MIB)
    smoothed = RATE_SMOOTHING * measured + (1 - RATE_SMOOTHING) * state.flush_s_per_mib
    return replace(state, flush_s_per_mib=smoothed)


def light_snapshot(
    last_full: MemorySnapshot, usage_bytes: int, state: GuardState | None = None
) -> MemorySnapshot:
    """What a light reading (usage alone) may be taken to say: what grew since the
    last full reading is page cache unless the recent full readings said the
    growth is what the kernel cannot reclaim (the share fixed_rate / rate, from
    readings at most MAX_SAMPLE_GAP_S apart; unknown: all of it may be cache, so
    a kill decided on it is one that this much reclaimable cache would not
    avert). An anon hog's light reading is then an anon reading: its kill needs
    no memory.stat on the kill path; a writer's growth stays cache."""
    grown = max(0, usage_bytes - last_full.usage_bytes)
    cache_grown = grown - int(grown * _fixed_share(state))
    return replace(
        last_full, usage_bytes=usage_bytes, cache_bytes=last_full.cache_bytes + cache_grown
    )


def _fixed_share(state: GuardState | None) -> float:
    """Of the recent growth, the share the kernel cannot reclaim (0: unknown)."""
    if state is None or state.rate_bytes_s is None or state.fixed_rate_bytes_s is None:
        return 0.0
    if state.rate_bytes_s <= 0:
        return 1.0 if state.fixed_rate_bytes_s > 0 else 0.0
    return min(1.0, max(0.0, state.fixed_rate_bytes_s / state.rate_bytes_s))


def samples_of(state: GuardState, source: GuardState) -> GuardState:
    """state with source's usage samples and rate: a light reading's rate is kept
    even when its decision is made again on a full reading."""
    return replace(
        state,
        sample_usage_bytes=source.sample_usage_bytes,
        sample_at_s=source.sample_at_s,
        rate_bytes_s=source.rate_bytes_s,
    )
