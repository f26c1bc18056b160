"""The decision table: what a guard does about usage at or near its threshold.

DECISIONS is data: rows of (step, condition, reason), tried in order; the first
whose condition holds decides (see policy.step's header for what each step
leads to). The facts it looks at are computed once per decision (Facts).

The kernel's OOM killer acts when what it cannot reclaim (anon, shmem: usage -
reclaimable cache) reaches the limit, not when usage does: it drops clean page
cache first, in the allocating task. So memguard kills only when that part is
at the act level (or will be within REACTION_BUDGET_S at its own fill rate):
usage over the threshold with enough reclaimable cache is WATCHed - left to
the kernel's reclaim (or flushed, when a flush can finish in time), looked at
again within half the time that part needs to reach the act level. A kill on a
projection further out was wrong as often as not: a process that reads 800 MiB
of a file and then allocates 800 MiB fast in 1 GiB was killed though the
kernel never would have (the audit behind this, 2026-11-30).
A cooldown after an action holds only until usage reaches the last-chance
level: refilling after a kill, the next emergency is memguard's, not the
kernel's. Shared memory (tmpfs, /dev/shm) over the act level alone is SKIPped:
killing processes frees none of it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from memguard.policy.margin import levels
from memguard.policy.model import MIB, GuardSettings, MemorySnapshot
from memguard.policy.rates import sampled
from memguard.policy.state import GuardState
from memguard.units import format_size

# Act before the threshold when, at the current fill rate, the limit is nearer than
# this: memguard's wake-up to the last SIGKILL of a container, the kernel's event
# granularity and a busy CPU's scheduling delay, with room to spare.
REACTION_BUDGET_S = 0.005
FLUSH_SAFETY = 2.0  # a flush must be expected to finish in half the time to the limit
MEASURE_S = 0.001  # a flush waits for a second reading this soon when the rate is unknown
WATCH_MIN_S = 0.001  # the soonest look while watching


class Step(enum.Enum):
    IDLE = "idle"
    COOLDOWN = "cooldown"
    FLUSH = "flush"
    SKIP = "skip"
    WATCH = "watch"  # over, but what the kernel cannot reclaim is under: reported as a skip
    ACT = "act"
    MEASURE = "measure"  # look again at once: the fill rate decides whether to flush


# -- the decision table ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What the table looks at, computed once per decision."""

    usage_bytes: int
    threshold_bytes: int | None
    cooling_down: bool
    flush_allowed: bool
    flush_could_help: bool  # dropping all reclaimable cache gets under the threshold
    flush_in_time: bool  # ... and it would finish before the limit at this rate
    rate_known: bool  # readings close together gave the rate of what a flush cannot drop
    # (or a second reading was already waited for)
    urgent: bool  # past the warning level, and an OOM closer than the reaction budget
    # the last action freed memory, and usage is back at the last-chance level (not
    # the fill rate: its samples straddle the action)
    refilled: bool
    shmem_bytes: int  # tmpfs/shm: no kill frees it
    fixed_bytes: int  # usage - reclaimable cache: what the kernel cannot reclaim
    cache_ratio: float  # reclaimable cache / usage
    max_cache_ratio: float
    since_flush_s: float | None
    just_flushed: bool  # this decision follows a flush that did not help
    rate_bytes_s: float | None
    fixed_rate_bytes_s: float | None  # of what the kernel cannot reclaim
    time_to_limit_s: float | None  # at the rate usage grows
    time_to_oom_s: float | None  # until what no flush can drop reaches the limit
    flush_expected_s: float
    cache_bytes: int
    flush_cooldown_s: float


@dataclass(frozen=True, slots=True)
class Rule:
    step: Step
    holds: Callable[[Facts], bool]
    reason: Callable[[Facts], str]


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.1f}ms"


def _act_reason(facts: Facts) -> str:
    if facts.just_flushed:
        return "still over threshold after a flush"
    if facts.cooling_down:
        return "at the last-chance level again, during the cooldown after an action"
    return "over threshold, too little page cache for a flush to help"


def _watch_reason(facts: Facts) -> str:
    why = ""
    if not facts.flush_allowed:
        why = (
            f"; no flush: the last was {facts.since_flush_s or 0:.1f}s ago "
            f"(flush cooldown {facts.flush_cooldown_s:g}s)"
        )
    elif not facts.flush_in_time:
        why = (
            f"; no flush: {format_size(facts.cache_bytes)} (~{_ms(facts.flush_expected_s)}) "
            f"would not finish in time"
        )
    return (
        f"over threshold, but what the kernel cannot reclaim ({format_size(facts.fixed_bytes)},"
        f" filling at {_fixed_rate(facts)}) is under it: left to the kernel's reclaim{why}"
    )


def _shmem_reason(facts: Facts) -> str:
    return (
        f"shared memory (tmpfs, /dev/shm) {format_size(facts.shmem_bytes)} alone holds usage "
        "over the threshold: killing processes frees none of it"
    )


def _fixed_rate(facts: Facts) -> str:
    rate = facts.fixed_rate_bytes_s
    return "?" if rate is None else f"{format_size(int(max(0.0, rate)))}/s"


def _skip_reason(facts: Facts) -> str:
    return (
        f"reclaimable cache is {facts.cache_ratio:.0%} of usage"
        f" (> {facts.max_cache_ratio:.0%}): left to the kernel's reclaim"
    )


def _urgent_reason(facts: Facts) -> str:
    return (
        f"what the kernel cannot reclaim is filling at {_fixed_rate(facts)}: "
        f"the limit is {_ms(facts.time_to_oom_s)} away"
    )


def _below(facts: Facts) -> bool:
    return facts.threshold_bytes is not None and facts.usage_bytes < facts.threshold_bytes


DECISIONS: tuple[Rule, ...] = (
    Rule(Step.IDLE, lambda f: f.threshold_bytes is None, lambda f: "no memory limit"),
    Rule(Step.IDLE, lambda f: _below(f) and not f.urgent, lambda f: "usage below threshold"),
    Rule(Step.SKIP, lambda f: f.shmem_bytes >= (f.threshold_bytes or 0), _shmem_reason),
    Rule(
        Step.COOLDOWN,
        lambda f: f.cooling_down and not f.refilled,
        lambda f: "cooling down after an action",
    ),
    Rule(Step.ACT, lambda f: f.urgent, _urgent_reason),
    Rule(
        Step.MEASURE,
        lambda f: f.flush_allowed and f.flush_could_help and not f.rate_known,
        lambda f: "over threshold, fill rate unknown: a second reading first",
    ),
    Rule(
        Step.FLUSH,
        lambda f: f.flush_allowed and f.flush_could_help and f.flush_in_time,
        lambda f: "usage at or over threshold",
    ),
    Rule(Step.SKIP, lambda f: f.cache_ratio > f.max_cache_ratio, _skip_reason),
    # after a flush, what it left is not reclaimable now: still over -> act
    Rule(Step.WATCH, lambda f: f.flush_could_help and not f.just_flushed, _watch_reason),
    Rule(Step.ACT, lambda f: True, _act_reason),
)


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    reason: str
    # The guard looks again at this time at the latest (None: recheck interval).
    retry_at_s: float | None = None


def facts(
    snapshot: MemorySnapshot,
    threshold: int | None,
    state: GuardState,
    settings: GuardSettings,
    now_s: float,
    just_flushed: bool = False,
) -> Facts:
    reclaimable = snapshot.reclaimable_cache_bytes
    last_flush = state.last_flush_at_s
    time_to_limit_s, time_to_oom_s = _times_s(snapshot, state)
    could_help = threshold is not None and snapshot.usage_bytes - reclaimable < threshold
    flush_expected_s = reclaimable / MIB * state.flush_s_per_mib
    urgent = time_to_oom_s is not None and time_to_oom_s < REACTION_BUDGET_S
    return Facts(
        usage_bytes=snapshot.usage_bytes,
        threshold_bytes=threshold,
        cooling_down=state.cooldown_until_s is not None and now_s < state.cooldown_until_s,
        flush_allowed=flush_allowed(state, settings, now_s),
        flush_could_help=could_help,
        flush_in_time=time_to_oom_s is None or time_to_oom_s > FLUSH_SAFETY * flush_expected_s,
        # One second reading only: if it too came too late to give a rate (a
        # stalled CPU), an unknown rate does not forbid the flush.
        rate_known=state.fixed_rate_bytes_s is not None or state.measured,
        urgent=_in_warned_zone(snapshot, settings) and urgent,
        refilled=state.freed_below_last_chance and _at_last_chance(snapshot, settings),
        shmem_bytes=snapshot.shmem_bytes,
        fixed_bytes=snapshot.usage_bytes - reclaimable,
        cache_ratio=reclaimable / max(snapshot.usage_bytes, 1),
        max_cache_ratio=settings.max_cache_ratio,
        since_flush_s=None if last_flush is None else now_s - last_flush,
        just_flushed=just_flushed,
        rate_bytes_s=state.rate_bytes_s,
        fixed_rate_bytes_s=state.fixed_rate_bytes_s,
        time_to_limit_s=time_to_limit_s,
        time_to_oom_s=time_to_oom_s,
        flush_expected_s=flush_expected_s,
        cache_bytes=reclaimable,
        flush_cooldown_s=settings.flush_cooldown_s,
    )


def _times_s(snapshot: MemorySnapshot, state: GuardState) -> tuple[float | None, float | None]:
    """(time to the limit at the fill rate, time until what no flush can drop
    reaches it at its own rate); None: no limit, or not growing."""
    limit = snapshot.limit_bytes
    time_to_limit_s = time_to_oom_s = None
    rate = state.rate_bytes_s
    if rate is not None and rate > 0 and limit is not None:
        time_to_limit_s = max(0.0, (limit - snapshot.usage_bytes) / rate)
    fixed_rate = state.fixed_rate_bytes_s
    if fixed_rate is not None and fixed_rate > 0 and limit is not None:
        reclaimable = snapshot.reclaimable_cache_bytes
        time_to_oom_s = max(0.0, (limit - snapshot.usage_bytes + reclaimable) / fixed_rate)
    return time_to_limit_s, time_to_oom_s


def _at_last_chance(snapshot: MemorySnapshot, settings: GuardSettings) -> bool:
    marks = levels(snapshot.limit_bytes, settings)
    last_chance = None if marks is None else marks.last_chance
    return last_chance is not None and snapshot.usage_bytes >= last_chance


def _in_warned_zone(snapshot: MemorySnapshot, settings: GuardSettings) -> bool:
    """Usage at or over the warning level (no warning level: the threshold)."""
    marks = levels(snapshot.limit_bytes, settings)
    return marks is not None and snapshot.usage_bytes >= (marks.warning or marks.threshold)


def decide(
    snapshot: MemorySnapshot,
    threshold: int | None,
    state: GuardState,
    settings: GuardSettings,
    now_s: float,
    just_flushed: bool = False,
) -> Decision:
    """The first row of DECISIONS that holds, and when to look again."""
    known = facts(snapshot, threshold, state, settings, now_s, just_flushed)
    rule = next(rule for rule in DECISIONS if rule.holds(known))
    hot_s = now_s + settings.hot_recheck_interval_s
    retry_at_s = {
        Step.IDLE: None,
        Step.COOLDOWN: state.cooldown_until_s,
        Step.MEASURE: now_s + MEASURE_S,
        Step.WATCH: _watch_look_s(known, now_s, hot_s),
    }.get(rule.step, hot_s)
    return Decision(rule.step, rule.reason(known), retry_at_s)


def _watch_look_s(known: Facts, now_s: float, hot_s: float) -> float:
    """Watching: half the time what the kernel cannot reclaim needs to reach the act
    level at its own rate (at least WATCH_MIN_S away), the hot recheck at the latest.
    Usage pinned at the limit crosses no threshold: only these looks see it grow."""
    rate = known.fixed_rate_bytes_s
    if rate is None or rate <= 0 or known.threshold_bytes is None:
        return hot_s
    headroom = max(0, known.threshold_bytes - known.fixed_bytes)
    return min(hot_s, now_s + max(WATCH_MIN_S, headroom / rate / 2))


def last_chance_reason(
    state: GuardState, snapshot: MemorySnapshot, settings: GuardSettings, now_s: float
) -> str | None:
    """During a flush, usage reached the last-chance level: why act now (None: the
    flush and the kernel's reclaim can still cope - what grows is page cache)."""
    marks = levels(snapshot.limit_bytes, settings)
    if marks is None or marks.last_chance is None or snapshot.usage_bytes < marks.last_chance:
        return None
    known = facts(
        snapshot, marks.threshold, sampled(state, snapshot, now_s, False), settings, now_s
    )
    if known.flush_could_help and not (
        known.time_to_oom_s is not None and known.time_to_oom_s < 2 * REACTION_BUDGET_S
    ):
        return None
    return (
        f"usage reached the last-chance level {format_size(marks.last_chance)} during a flush"
        " and a flush cannot save it: acted without waiting for it"
    )


def flush_allowed(state: GuardState, settings: GuardSettings, now_s: float) -> bool:
    last = state.last_flush_at_s
    return last is None or now_s - last >= settings.flush_cooldown_s


def flush_request_bytes(snapshot: MemorySnapshot, threshold: int) -> int:
    """What a bounded reclaim (v2 memory.reclaim) asks for: enough to bring usage
    one margin under the threshold, never more than the reclaimable cache."""
    margin = (snapshot.limit_bytes or threshold) - threshold
    wanted = snapshot.usage_bytes - (threshold - margin)
    return max(0, min(wanted, snapshot.reclaimable_cache_bytes))
