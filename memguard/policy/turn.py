"""One call of the guard's step (Turn), and what every path of the step shares:
the Arm effect for the levels, the level the decision table acts at, and when to
look again while nothing is under way.
"""

from __future__ import annotations

from dataclasses import dataclass

from memguard.policy.effects import Arm
from memguard.policy.margin import Levels
from memguard.policy.model import GuardSettings, MemorySnapshot
from memguard.policy.state import GuardState

WARNED_LOOK_S = (0.001, 1.0)  # bounds of the next look while warned


@dataclass(frozen=True, slots=True)
class Turn:
    """What one step looks at besides the guard's state."""

    snapshot: MemorySnapshot  # fresh: read after the event
    settings: GuardSettings
    now_s: float
    marks: Levels | None  # the levels at snapshot.limit_bytes (None: no limit)
    oom_kills: int  # kernel OOM kills since the last look


def arm(marks: Levels | None, after_action: bool = False) -> Arm:
    if marks is None:
        return Arm(None, after_action)
    return Arm(marks.threshold, after_action, marks.warning, marks.last_chance, marks.soft)


def act_level(marks: Levels) -> int:
    """Where the decision table acts: the soft level (graceful), else the threshold."""
    return marks.threshold if marks.soft is None else marks.soft


def next_look_s(state: GuardState, turn: Turn) -> float | None:
    """Warned: half the time to the threshold at the current rate (1 ms .. 1 s);
    with the cache flusher on, every --flush-interval; else the recheck interval."""
    looks: list[float] = []
    marks, settings, now_s = turn.marks, turn.settings, turn.now_s
    if state.warned and marks is not None:
        rate = state.rate_bytes_s
        headroom = max(0, act_level(marks) - turn.snapshot.usage_bytes)
        if rate is None:
            wait_s = WARNED_LOOK_S[0]  # at once: a second reading gives the rate
        else:
            wait_s = WARNED_LOOK_S[1] if rate <= 0 else headroom / rate / 2
        looks.append(now_s + min(max(wait_s, WARNED_LOOK_S[0]), WARNED_LOOK_S[1]))
    if settings.cache_flush_above is not None:
        looks.append(now_s + min(settings.cache_flush_interval_s, settings.recheck_interval_s))
    return min(looks) if looks else None


def under_last_chance(turn: Turn) -> bool:
    """Usage now under the last-chance level (after an action: it freed memory)."""
    marks = turn.marks
    return marks is not None and (
        marks.last_chance is None or turn.snapshot.usage_bytes < marks.last_chance
    )
