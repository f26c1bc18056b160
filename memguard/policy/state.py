"""What a guard remembers between wake-ups (pure, frozen: step() returns a new one)."""

from __future__ import annotations

from dataclasses import dataclass

from memguard.policy.model import MemorySnapshot

NOT_ARMED: int = -1  # armed_threshold before the first registration


@dataclass(frozen=True, slots=True)
class GuardState:
    armed_threshold: int | None = NOT_ARMED  # None: armed for OOM events only (no limit)
    last_flush_at_s: float | None = None  # the OOM path's last flush
    last_cache_flush_at_s: float | None = None  # the cache flusher's (--flush-cache-above)
    cooldown_until_s: float | None = None
    skip_reported_at_s: float | None = None
    oom_kills_seen: int | None = None
    before_flush: MemorySnapshot | None = None  # during an OOM-path flush: usage before it
    flush_s: float = 0.0  # that flush's duration, counted in the action's
    act_reason: str = ""  # while acting: why (for the report)
    unlimited_noted: bool = False  # said once: --flush-cache-above has no meaning here

    @property
    def armed(self) -> bool:
        return self.armed_threshold != NOT_ARMED
