"""How often to read memory.current on cgroup v2, where no threshold event exists.

earlyoom's rule: the time left before the threshold is headroom / fill rate;
look again at half of it, within [min_interval_s, max_interval_s]. The fill
rate is a smoothed (EWMA) rate of growth; it never counts below
assumed_min_rate (a cgroup that was idle may start allocating at any moment),
and shrinking usage does not lower it faster than the smoothing allows.
"""

from __future__ import annotations

from dataclasses import dataclass

SMOOTHING = 0.5  # weight of the newest rate sample


@dataclass(frozen=True, slots=True)
class PollSettings:
    min_interval_s: float = 0.01
    max_interval_s: float = 1.0
    assumed_min_rate_bytes_s: float = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PollState:
    usage_bytes: int | None = None
    at_s: float | None = None
    rate_bytes_s: float = 0.0


def observe(state: PollState, usage_bytes: int, now_s: float) -> PollState:
    """Fold one reading of memory.current into the rate estimate."""
    if state.usage_bytes is None or state.at_s is None or now_s <= state.at_s:
        return PollState(usage_bytes, now_s, state.rate_bytes_s)
    sample = (usage_bytes - state.usage_bytes) / (now_s - state.at_s)
    rate = SMOOTHING * max(sample, 0.0) + (1 - SMOOTHING) * state.rate_bytes_s
    return PollState(usage_bytes, now_s, rate)


def next_interval_s(state: PollState, threshold_bytes: int | None, settings: PollSettings) -> float:
    """Seconds until the next reading of memory.current."""
    if threshold_bytes is None or state.usage_bytes is None:
        return settings.max_interval_s
    headroom = threshold_bytes - state.usage_bytes
    if headroom <= 0:
        return settings.min_interval_s
    rate = max(state.rate_bytes_s, settings.assumed_min_rate_bytes_s)
    return min(max(0.5 * headroom / rate, settings.min_interval_s), settings.max_interval_s)
