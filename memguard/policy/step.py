"""The guard's step, as a pure function: no I/O, no clock, no trio (h11's rule).

    step(state, snapshot, event, settings, now_s) -> (state, effects)

A guard reads a fresh snapshot, calls step() with what just happened (the
event) and carries out the effects in order; an effect that does I/O with an
outcome (Arm, Flush, CacheFlush, Act) is followed by a fresh snapshot and the
matching event (Armed, Flushed, CacheFlushed, Acted). With no such effect the
guard waits for the kernel, or until the LookAgain time.

Rules, in this order, on every event:
1. New kernel OOM kills since the last look (memory.oom_control / memory.events
   oom_kill) are reported first: CgroupOOM.
2. The threshold follows the limit (policy.margin): when it differs from the
   armed one, Arm it and look again (usage may have crossed before the
   registration took). After an action, Arm again (a fresh registration).
3. Then the decision table, DECISIONS below: the first row whose condition
   holds decides.
   - FLUSH: flush, then (event Flushed) decide again on the new snapshot; if
     usage is back under the threshold, report the flush (OomGuardFlush), else
     go on down the table with the snapshot from before the flush.
   - SKIP: report at most one per cooldown_s; look again after the hot
     recheck interval (usage pinned at the limit crosses no threshold).
   - ACT: run the policy (Act); its outcome (event Acted) becomes the report
     (kill_kind: process, container, no victim, noop), then cooldown_s.
   - IDLE: the page-cache flusher may flush (policy.cacheflush; event
     CacheFlushed is reported as OomGuardFlush); with it on, look again every
     --flush-interval.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

from memguard.policy.cacheflush import CacheStep, cache_limit_bytes, decide_cache_flush
from memguard.policy.effects import (
    Act,
    Acted,
    Arm,
    CacheFlush,
    CacheFlushed,
    Effect,
    Event,
    Flush,
    Flushed,
    LookAgain,
    NoteUnlimited,
    Outcome,
    Publish,
)
from memguard.policy.kinds import ReportKind
from memguard.policy.margin import threshold_bytes
from memguard.policy.model import GuardSettings, MemorySnapshot, Policy
from memguard.policy.state import GuardState
from memguard.units import format_size


class Step(enum.Enum):
    IDLE = "idle"
    COOLDOWN = "cooldown"
    FLUSH = "flush"
    SKIP = "skip"
    ACT = "act"


# -- the decision table ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What the table looks at, computed once per decision."""

    usage_bytes: int
    threshold_bytes: int | None
    cooling_down: bool
    flush_allowed: bool
    flush_could_help: bool  # dropping all reclaimable cache gets under the threshold
    cache_ratio: float  # reclaimable cache / usage
    max_cache_ratio: float
    since_flush_s: float | None


@dataclass(frozen=True, slots=True)
class Rule:
    step: Step
    holds: Callable[[Facts], bool]
    reason: Callable[[Facts], str]


def _act_reason(facts: Facts) -> str:
    if facts.flush_allowed or facts.since_flush_s is None:
        return "over threshold, too little page cache for a flush to help"
    return f"still over threshold {facts.since_flush_s:.1f}s after a flush"


def _skip_reason(facts: Facts) -> str:
    return (
        f"reclaimable cache is {facts.cache_ratio:.0%} of usage"
        f" (> {facts.max_cache_ratio:.0%}): left to the kernel's reclaim"
    )


DECISIONS: tuple[Rule, ...] = (
    Rule(Step.IDLE, lambda f: f.threshold_bytes is None, lambda f: "no memory limit"),
    Rule(
        Step.IDLE,
        lambda f: f.usage_bytes < (f.threshold_bytes or 0),
        lambda f: "usage below threshold",
    ),
    Rule(Step.COOLDOWN, lambda f: f.cooling_down, lambda f: "cooling down after an action"),
    Rule(
        Step.FLUSH,
        lambda f: f.flush_allowed and f.flush_could_help,
        lambda f: "usage at or over threshold",
    ),
    Rule(Step.SKIP, lambda f: f.cache_ratio > f.max_cache_ratio, _skip_reason),
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
) -> Facts:
    reclaimable = snapshot.reclaimable_cache_bytes
    last_flush = state.last_flush_at_s
    return Facts(
        usage_bytes=snapshot.usage_bytes,
        threshold_bytes=threshold,
        cooling_down=state.cooldown_until_s is not None and now_s < state.cooldown_until_s,
        flush_allowed=flush_allowed(state, settings, now_s),
        flush_could_help=threshold is not None and snapshot.usage_bytes - reclaimable < threshold,
        cache_ratio=reclaimable / max(snapshot.usage_bytes, 1),
        max_cache_ratio=settings.max_cache_ratio,
        since_flush_s=None if last_flush is None else now_s - last_flush,
    )


def decide(
    snapshot: MemorySnapshot,
    threshold: int | None,
    state: GuardState,
    settings: GuardSettings,
    now_s: float,
) -> Decision:
    """The first row of DECISIONS that holds, and when to look again."""
    known = facts(snapshot, threshold, state, settings, now_s)
    rule = next(rule for rule in DECISIONS if rule.holds(known))
    retry_at_s = {
        Step.IDLE: None,
        Step.COOLDOWN: state.cooldown_until_s,
    }.get(rule.step, now_s + settings.hot_recheck_interval_s)
    return Decision(rule.step, rule.reason(known), retry_at_s)


def flush_allowed(state: GuardState, settings: GuardSettings, now_s: float) -> bool:
    last = state.last_flush_at_s
    return last is None or now_s - last >= settings.flush_cooldown_s


def flush_request_bytes(snapshot: MemorySnapshot, threshold: int) -> int:
    """What a bounded reclaim (v2 memory.reclaim) asks for: enough to bring usage
    one margin under the threshold, never more than the reclaimable cache."""
    margin = (snapshot.limit_bytes or threshold) - threshold
    wanted = snapshot.usage_bytes - (threshold - margin)
    return max(0, min(wanted, snapshot.reclaimable_cache_bytes))


def new_oom_kills(state: GuardState, snapshot: MemorySnapshot) -> tuple[int, GuardState]:
    """How many kernel OOM kills happened since the last look (0 on the first)."""
    seen = state.oom_kills_seen
    current = snapshot.oom_kill_count
    fresh = 0 if seen is None else max(0, current - seen)
    return fresh, replace(state, oom_kills_seen=current)


# -- the step --------------------------------------------------------------------------


def step(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: Event,
    settings: GuardSettings,
    now_s: float,
) -> Outcome:
    """What to do now; snapshot is fresh (read after the event)."""
    effects: list[Effect] = []
    fresh, state = new_oom_kills(state, snapshot)
    if fresh:
        effects.append(
            Publish(
                ReportKind.KERNEL_OOM,
                snapshot,
                "kernel OOM killer acted",
                "the kernel's OOM killer killed in this cgroup",
                oom_kills=fresh,
            )
        )
    threshold = threshold_bytes(snapshot.limit_bytes, settings)
    if isinstance(event, Acted):
        return _acted(state, snapshot, event, settings, now_s, effects)
    if threshold != state.armed_threshold:
        return Outcome(replace(state, armed_threshold=threshold), (*effects, Arm(threshold)))
    if isinstance(event, CacheFlushed):
        return _cache_flushed(state, snapshot, event, settings, now_s, effects)
    before = snapshot
    if isinstance(event, Flushed) and state.before_flush is not None:
        before = state.before_flush
        state = replace(state, before_flush=None, flush_s=event.duration_s)
    decision = decide(snapshot, threshold, state, settings, now_s)
    if isinstance(event, Flushed) and decision.step is Step.IDLE:
        effects.append(
            Publish(
                ReportKind.FLUSH,
                before,
                "flushed page cache",
                "usage back under the threshold",
                snapshot,
                event.duration_s,
            )
        )
        state = replace(state, flush_s=0.0)
        return Outcome(state, (*effects, LookAgain(_next_look_s(settings, now_s))))
    return _decided(state, snapshot, before, decision, threshold, settings, now_s, effects)


def _decided(
    state: GuardState,
    snapshot: MemorySnapshot,
    before: MemorySnapshot,
    decision: Decision,
    threshold: int | None,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    if decision.step is Step.FLUSH and threshold is not None:
        request = flush_request_bytes(snapshot, threshold)
        state = replace(state, last_flush_at_s=now_s, before_flush=snapshot)
        return Outcome(state, (*effects, Flush(request)))
    if decision.step is Step.ACT:
        # The report says usage before any flush, and why it acted.
        state = replace(state, before_flush=before, act_reason=decision.reason)
        return Outcome(state, (*effects, Act(settings.policy, decision.reason)))
    if decision.step is Step.SKIP:
        last = state.skip_reported_at_s
        if last is None or now_s - last >= settings.cooldown_s:
            state = replace(state, skip_reported_at_s=now_s)
            effects.append(
                Publish(ReportKind.SKIP, before, "left to the kernel", decision.reason, snapshot)
            )
        return Outcome(state, (*effects, LookAgain(decision.retry_at_s)))
    if decision.step is Step.IDLE:
        return _idle(state, snapshot, settings, now_s, effects)
    return Outcome(state, (*effects, LookAgain(decision.retry_at_s)))


def _idle(
    state: GuardState,
    snapshot: MemorySnapshot,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    """Under the threshold: the page-cache flusher's turn (--flush-cache-above)."""
    cache = decide_cache_flush(snapshot, settings.cache_flush_above, state, settings, now_s)
    if cache.step is CacheStep.UNLIMITED and not state.unlimited_noted:
        state = replace(state, unlimited_noted=True)
        effects.append(NoteUnlimited())
    if cache.step is CacheStep.FLUSH:
        state = replace(state, last_cache_flush_at_s=now_s, before_flush=snapshot)
        return Outcome(state, (*effects, CacheFlush(cache.request_bytes)))
    return Outcome(state, (*effects, LookAgain(_next_look_s(settings, now_s))))


def _cache_flushed(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: CacheFlushed,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    before = state.before_flush or snapshot
    limit = settings.cache_flush_above
    above = cache_limit_bytes(limit, before.limit_bytes) if limit is not None else None
    reason = (
        f"page cache {format_size(before.reclaimable_cache_bytes)} was over "
        f"--flush-cache-above {format_size(above)}"
    )
    report = Publish(
        ReportKind.FLUSH, before, "flushed page cache", reason, snapshot, event.duration_s
    )
    state = replace(state, before_flush=None)
    return Outcome(state, (*effects, report, LookAgain(_next_look_s(settings, now_s))))


def _acted(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: Acted,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    kind = kill_kind(settings.policy, event.victims)
    before = state.before_flush or snapshot
    duration_s = event.duration_s + state.flush_s
    report = Publish(
        kind, before, action_words(kind, settings.dry_run), state.act_reason, snapshot, duration_s
    )
    state = replace(
        state,
        before_flush=None,
        flush_s=0.0,
        act_reason="",
        cooldown_until_s=now_s + settings.cooldown_s,
    )
    # Re-arm after every action: a fresh registration, whatever happened.
    rearm = Arm(state.armed_threshold if state.armed else None, after_action=True)
    return Outcome(state, (*effects, report, rearm))


def kill_kind(policy: Policy, victims: int) -> ReportKind:
    if policy is Policy.NOOP:
        return ReportKind.NOOP
    if victims == 0:
        return ReportKind.NO_VICTIM
    return ReportKind.KILL_PROCESS if policy is Policy.PROCESS else ReportKind.KILL_CONTAINER


def action_words(kind: ReportKind, dry_run: bool) -> str:
    if kind is ReportKind.NOOP:
        return "over threshold, reported only (policy noop)"
    if kind is ReportKind.NO_VICTIM:
        return "over threshold, no process memguard may kill"
    target = "process" if kind is ReportKind.KILL_PROCESS else "container"
    return f"would kill {target} (dry run)" if dry_run else f"killed {target}"


def _next_look_s(settings: GuardSettings, now_s: float) -> float | None:
    """With the cache flusher on, look again every --flush-interval."""
    if settings.cache_flush_above is None:
        return None
    return now_s + min(settings.cache_flush_interval_s, settings.recheck_interval_s)
