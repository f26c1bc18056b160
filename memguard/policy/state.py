"""What a guard remembers between wake-ups (pure, frozen: step() returns a new one)."""

from __future__ import annotations

from dataclasses import dataclass

from memguard.policy.model import MemorySnapshot, Policy

NOT_ARMED: int = -1  # armed_threshold before the first registration
# How long a flush takes, per MiB reclaimed, before one was measured: slower than
# measured here (force_empty: 200 MiB in 0.12 s, 0.6 ms/MiB), so the first guess
# errs on the side of not flushing when time is short.
FLUSH_S_PER_MIB_START = 0.002


@dataclass(frozen=True, slots=True)
class GuardState:
    armed_threshold: int | None = NOT_ARMED  # None: armed for OOM events only (no limit)
    last_flush_at_s: float | None = None  # the OOM path's last flush
    last_cache_flush_at_s: float | None = None  # the cache flusher's (--flush-cache-above)
    cooldown_until_s: float | None = None
    # the last action brought usage under the last-chance level: a refill back to it
    # ends the cooldown (an action that freed nothing, noop, never does)
    freed_below_last_chance: bool = False
    skip_reported_at_s: float | None = None
    oom_kills_seen: int | None = None
    before_flush: MemorySnapshot | None = None  # during a flush or an action: usage before
    flush_s: float = 0.0  # the flush that preceded an action, counted in its duration
    act_reason: str = ""  # while acting: why (for the report)
    unlimited_noted: bool = False  # said once: --flush-cache-above has no meaning here
    # Fill rates (EWMA, bytes per second): of usage, from every reading; and of
    # what a flush cannot drop (usage - reclaimable cache), from full readings.
    sample_usage_bytes: int | None = None
    sample_at_s: float | None = None
    rate_bytes_s: float | None = None
    sample_fixed_bytes: int | None = None
    sample_fixed_at_s: float | None = None
    fixed_rate_bytes_s: float | None = None
    # How long a flush takes per MiB reclaimed here (EWMA of measured flushes).
    flush_s_per_mib: float = FLUSH_S_PER_MIB_START
    warned: bool = False  # usage reached the warning level: victims are prepared
    measured: bool = False  # the last decision waited for a second reading (once only)
    # graceful/evict: when this episode's Terminate was issued (once per episode:
    # over the act level again after it, the container kill; None again once usage
    # is back a margin under the act level)
    terminated_at_s: float | None = None
    acting_policy: Policy | None = None  # while acting: the policy run (escalation: container)

    @property
    def armed(self) -> bool:
        return self.armed_threshold != NOT_ARMED
