"""The guard's step, as a pure function: no I/O, no clock, no trio (h11's rule).

    step(state, snapshot, event, settings, now_s) -> (state, effects)

A guard reads a fresh snapshot, calls step() with what just happened (the
event) and carries out the effects in order; an effect that does I/O with an
outcome (Arm, Flush, CacheFlush, Act) is followed by a fresh snapshot and the
matching event (Armed, Flushed or LastChance, CacheFlushed, Acted). With no
such effect the guard waits for the kernel, or until the LookAgain time.
A kernel notification is first met with usage alone (Woke(light=True), the
snapshot from policy.rates.light_snapshot: what grew since the last full
reading counted as page cache); the guard carries out only an Act decided on
it - anything else is decided again on a full reading.

Rules, in this order, on every event:
1. Every reading of usage updates the fill rate (an EWMA over successive
   readings). New kernel OOM kills since the last look are reported first:
   CgroupOOM ("during a flush" when one was running: the usage it freed is the
   kernel's doing, never credited to the flush).
2. The levels follow the limit (policy.margin.Levels: warning, threshold,
   last chance): when the threshold differs from the armed one, Arm them all
   and look again (usage may have crossed before the registration took). After
   an action, Arm again (a fresh registration).
3. Usage at or over the warning level: Prepare the victims (pidfds; ranked for
   the process policy) and look again soon (half the time to the threshold at
   the current rate, 1 ms .. 1 s; 1 ms while the rate is unknown: the next
   reading gives it); back under the warning level by a margin:
   Unprepare.
4. Then the decision table, policy.table.DECISIONS: the first row whose condition
   holds decides. The threshold is the floor of the margin: memguard acts there
   at the latest, earlier when the fill rate leaves less than REACTION_BUDGET_S
   to the limit.
   - MEASURE: a flush could help but the fill rate is unknown: look again in
     MEASURE_S (1 ms); that reading gives the rate (once: if it came too late
     to give one, an unknown rate does not forbid the flush).
   - FLUSH only when dropping the reclaimable cache brings usage under the
     threshold AND the flush can finish before the limit at the current rate
     (its expected time: the cache's MiB x this cgroup's measured seconds per
     MiB, FLUSH_SAFETY x over). While it
     runs the guard listens: usage at the last-chance level acts at once
     (event LastChance). After it (Flushed): back under the threshold ->
     OomGuardFlush; else on down the table with the usage from before.
   - SKIP: report at most one per cooldown_s; look again after the hot
     recheck interval (usage pinned at the limit crosses no threshold).
   - ACT: run the policy (Act); its outcome (event Acted) becomes the report
     (kill_kind: process, container, no victim, noop), then cooldown_s.
   - IDLE: the page-cache flusher may flush (policy.cacheflush; event
     CacheFlushed is reported as OomGuardFlush); with it on, look again every
     --flush-interval.
"""

from __future__ import annotations

from dataclasses import replace

from memguard.policy.cacheflush import CacheStep, cache_limit_bytes, decide_cache_flush
from memguard.policy.effects import (
    ESCALATING,
    Act,
    Acted,
    Arm,
    CacheFlush,
    CacheFlushed,
    Effect,
    Ending,
    Event,
    Flush,
    Flushed,
    LastChance,
    LookAgain,
    NoteUnlimited,
    Outcome,
    Prepare,
    Pressure,
    Publish,
    Terminate,
    Terminated,
    Unprepare,
    Woke,
)
from memguard.policy.kinds import ReportKind
from memguard.policy.margin import Levels, levels
from memguard.policy.model import (
    DEFAULT_GRACE_PERIOD_S,
    GracefulVia,
    GuardSettings,
    MemorySnapshot,
    Policy,
)
from memguard.policy.rates import flush_measured, new_oom_kills, sampled
from memguard.policy.state import GuardState
from memguard.policy.table import (
    Decision,
    Step,
    decide,
    flush_request_bytes,
    last_chance_reason,
)
from memguard.units import format_size

WARNED_LOOK_S = (0.001, 1.0)  # bounds of the next look while warned


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
    state = sampled(state, snapshot, now_s, isinstance(event, Woke) and event.light)
    fresh, state = new_oom_kills(state, snapshot)
    if fresh:
        during = " during a flush" if isinstance(event, Flushed | LastChance) else ""
        effects.append(
            Publish(
                ReportKind.KERNEL_OOM,
                snapshot,
                "kernel OOM killer acted",
                f"the kernel's OOM killer killed in this cgroup{during}",
                oom_kills=fresh,
            )
        )
    marks = levels(snapshot.limit_bytes, settings)
    threshold = None if marks is None else marks.threshold
    if isinstance(event, Acted):
        return _acted(state, snapshot, event, settings, now_s, effects, marks)
    if isinstance(event, Terminated):
        return _terminated(state, snapshot, event, settings, now_s, effects, marks)
    if threshold != state.armed_threshold:
        state = replace(state, armed_threshold=threshold)
        return Outcome(state, (*effects, _arm(marks)))
    if isinstance(event, CacheFlushed):
        return _cache_flushed(state, snapshot, event, settings, now_s, effects)
    if isinstance(event, Pressure):
        return _pressure(state, snapshot, event, settings, now_s, effects)
    if isinstance(event, LastChance):
        reason = last_chance_reason(state, snapshot, settings, now_s) or "last chance"
        before = state.before_flush or snapshot
        if settings.protected is not None:
            return _protected(state, snapshot, before, reason, settings, now_s, effects)
        policy = _kill_policy(settings.policy)  # graceful, evict: no time left for either
        state = replace(state, before_flush=before, act_reason=reason, acting_policy=policy)
        return Outcome(state, (*effects, Act(policy, reason)))
    state, effects = _warning(state, snapshot, marks, settings, effects)
    act_level = None if marks is None else _act_level(marks)
    if state.terminated_at_s is not None and marks is not None and snapshot.limit_bytes:
        margin = snapshot.limit_bytes - marks.threshold
        if snapshot.usage_bytes < _act_level(marks) - margin:
            state = replace(state, terminated_at_s=None)  # well under again: the episode is over
    before = snapshot
    just_flushed = isinstance(event, Flushed) and state.before_flush is not None
    if isinstance(event, Flushed) and state.before_flush is not None:
        before = state.before_flush
        reclaimed = before.cache_bytes - snapshot.cache_bytes
        state = flush_measured(state, event.duration_s, reclaimed)
        state = replace(state, before_flush=None, flush_s=event.duration_s)
    decision = decide(snapshot, act_level, state, settings, now_s, just_flushed)
    if just_flushed and decision.step is Step.IDLE:
        if not fresh:  # a drop the kernel's OOM killer made is not the flush's
            assert isinstance(event, Flushed)
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
        return Outcome(
            state, (*effects, LookAgain(_next_look_s(state, snapshot, marks, settings, now_s)))
        )
    return _decided(state, snapshot, before, decision, marks, settings, now_s, effects)


def _arm(marks: Levels | None, after_action: bool = False) -> Arm:
    if marks is None:
        return Arm(None, after_action)
    return Arm(marks.threshold, after_action, marks.warning, marks.last_chance, marks.soft)


def _act_level(marks: Levels) -> int:
    """Where the decision table acts: the soft level (graceful), else the threshold."""
    return marks.threshold if marks.soft is None else marks.soft


def _kill_policy(policy: Policy) -> Policy:
    """The kill a policy comes to when there is no time (graceful, evict: container)."""
    return Policy.CONTAINER if policy in (Policy.GRACEFUL, Policy.EVICT) else policy


def _warning(
    state: GuardState,
    snapshot: MemorySnapshot,
    marks: Levels | None,
    settings: GuardSettings,
    effects: list[Effect],
) -> tuple[GuardState, list[Effect]]:
    """Past the warning level: prepare the victims; well under it again: let go."""
    if marks is None or marks.warning is None:
        return state, effects
    usage = snapshot.usage_bytes
    if not state.warned and usage >= marks.warning:
        return replace(state, warned=True), [*effects, Prepare()]
    margin = (snapshot.limit_bytes or marks.threshold) - marks.threshold
    if state.warned and usage < marks.warning - margin:
        return replace(state, warned=False), [*effects, Unprepare()]
    return state, effects


def _decided(
    state: GuardState,
    snapshot: MemorySnapshot,
    before: MemorySnapshot,
    decision: Decision,
    marks: Levels | None,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    state = replace(state, measured=decision.step is Step.MEASURE)
    if decision.step is Step.FLUSH and marks is not None:
        request = flush_request_bytes(snapshot, _act_level(marks))
        state = replace(state, last_flush_at_s=now_s, before_flush=snapshot)
        return Outcome(state, (*effects, Flush(request, marks.last_chance)))
    if decision.step is Step.ACT:
        return _act(state, snapshot, before, decision.reason, marks, settings, now_s, effects)
    if decision.step is Step.SKIP:
        last = state.skip_reported_at_s
        if last is None or now_s - last >= settings.cooldown_s:
            state = replace(state, skip_reported_at_s=now_s)
            effects.append(
                Publish(ReportKind.SKIP, before, "left to the kernel", decision.reason, snapshot)
            )
        return Outcome(state, (*effects, LookAgain(decision.retry_at_s)))
    if decision.step is Step.IDLE:
        return _idle(state, snapshot, marks, settings, now_s, effects)
    return Outcome(state, (*effects, LookAgain(decision.retry_at_s)))


def _idle(
    state: GuardState,
    snapshot: MemorySnapshot,
    marks: Levels | None,
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
    look_at_s = _next_look_s(state, snapshot, marks, settings, now_s)
    return Outcome(state, (*effects, LookAgain(look_at_s)))


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
    look = LookAgain(
        _next_look_s(state, snapshot, levels(snapshot.limit_bytes, settings), settings, now_s)
    )
    return Outcome(state, (*effects, report, look))


def _acted(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: Acted,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
    marks: Levels | None,
) -> Outcome:
    kind = kill_kind(state.acting_policy or settings.policy, event.victims)
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
        acting_policy=None,
        cooldown_until_s=now_s + settings.cooldown_s,
    )
    # Re-arm after every action: a fresh registration, whatever happened.
    return Outcome(state, (*effects, report, _arm(marks, after_action=True)))


def _act(
    state: GuardState,
    snapshot: MemorySnapshot,
    before: MemorySnapshot,
    reason: str,
    marks: Levels | None,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    """The decision table said act: the policy (the report says usage before any
    flush, and why). Protected pods: reported only. graceful and evict: Terminate
    once per episode, the container kill after it (or at once at the hard threshold)."""
    if settings.protected is not None:
        return _protected(state, snapshot, before, reason, settings, now_s, effects)
    policy = settings.policy
    state = replace(state, before_flush=before)
    if policy in (Policy.GRACEFUL, Policy.EVICT) and marks is not None:
        hard = marks.threshold
        if state.terminated_at_s is not None:
            why = f"escalated: still over after the graceful try ({reason})"
            return _escalate(state, why, effects)
        if policy is Policy.GRACEFUL and marks.soft is not None and snapshot.usage_bytes >= hard:
            why = (
                f"escalated: usage {format_size(snapshot.usage_bytes)} already at the hard "
                f"threshold {format_size(hard)}, no time to stop gracefully ({reason})"
            )
            return _escalate(state, why, effects)
        graceful = policy is Policy.GRACEFUL
        via = settings.graceful_via if graceful else GracefulVia.EVICT
        escalate = hard if graceful else (marks.last_chance or snapshot.limit_bytes)
        grace_s = settings.grace_period_s
        terminate = Terminate(
            via,
            reason,
            escalate,
            DEFAULT_GRACE_PERIOD_S if grace_s is None else grace_s,
            fall_back=graceful,
        )
        state = replace(state, terminated_at_s=now_s, act_reason=reason)
        return Outcome(state, (*effects, terminate))
    state = replace(state, act_reason=reason, acting_policy=_kill_policy(policy))
    return Outcome(state, (*effects, Act(_kill_policy(policy), reason)))


def _pressure(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: Pressure,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    """The swap trigger chose this container: Terminate (--graceful-via), escalated
    only when the grace period runs out; protected pods: reported only; a graceful
    try already under way: nothing more."""
    if settings.protected is not None:
        return _protected(state, snapshot, snapshot, event.reason, settings, now_s, effects)
    if state.terminated_at_s is not None:
        return Outcome(state, (*effects, LookAgain(None)))
    grace_s = settings.grace_period_s
    terminate = Terminate(
        settings.graceful_via,
        event.reason,
        None,  # no usage level: a swapping container sits at its limit
        DEFAULT_GRACE_PERIOD_S if grace_s is None else grace_s,
        fall_back=True,
    )
    state = replace(state, terminated_at_s=now_s, act_reason=event.reason, before_flush=snapshot)
    return Outcome(state, (*effects, terminate))


def _escalate(state: GuardState, reason: str, effects: list[Effect]) -> Outcome:
    state = replace(state, act_reason=reason, acting_policy=Policy.CONTAINER)
    return Outcome(state, (*effects, Act(Policy.CONTAINER, reason)))


def _protected(
    state: GuardState,
    snapshot: MemorySnapshot,
    before: MemorySnapshot,
    reason: str,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
) -> Outcome:
    """Would act, but the pod is protected: say so (once per cooldown), never act."""
    until_s = now_s + settings.cooldown_s
    report = Publish(
        ReportKind.PROTECTED,
        before,
        f"not acting (policy {settings.policy.value}): {settings.protected}",
        reason,
        snapshot,
    )
    state = replace(state, before_flush=None, flush_s=0.0, cooldown_until_s=until_s)
    return Outcome(state, (*effects, report, LookAgain(until_s)))


TERMINATE_KINDS = {
    GracefulVia.PROCESS: ReportKind.TERMINATE,
    GracefulVia.EVICT: ReportKind.EVICT,
    GracefulVia.DELETE: ReportKind.DELETE,
}
_DONE_WORDS = {
    GracefulVia.PROCESS: ("terminated", "would terminate"),
    GracefulVia.EVICT: ("evicted pod", "would evict pod"),
    GracefulVia.DELETE: ("deleted pod", "would delete pod"),
}


def _terminated(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: Terminated,
    settings: GuardSettings,
    now_s: float,
    effects: list[Effect],
    marks: Levels | None,
) -> Outcome:
    """A graceful try ended: the container exited (report), or escalate."""
    before = state.before_flush or snapshot
    detail = f" ({event.detail})" if event.detail else ""
    if event.ending is Ending.LEVEL_REACHED:
        level = "hard threshold" if settings.policy is Policy.GRACEFUL else "last-chance level"
        why = f"usage reached the {level} {format_size(event.level_bytes)}"
    elif event.ending is Ending.GRACE_OVER:
        why = f"the grace period of {event.grace_s:g}s is over"
    elif event.ending is Ending.FAILED:
        why = "the pod could not be evicted"
    else:
        why = "no process memguard may signal"
    if event.ending in ESCALATING:
        reason = f"escalated: {why}{detail}; first: {state.act_reason}"
        state = replace(state, flush_s=state.flush_s + event.duration_s)
        return _escalate(state, reason, effects)
    done, would = _DONE_WORDS[event.via]
    if event.ending is Ending.DRY_RUN:
        action = f"{would} (dry run)"
    elif event.ending is Ending.POD_GONE:
        action = f"{done}: the pod was gone already"
    else:
        action = f"{done}: the container exited after {event.duration_s:.3f}s"
    report = Publish(
        TERMINATE_KINDS[event.via],
        before,
        action,
        f"{state.act_reason}{detail}",
        snapshot,
        event.duration_s + state.flush_s,
    )
    state = replace(
        state,
        before_flush=None,
        flush_s=0.0,
        act_reason="",
        cooldown_until_s=now_s + settings.cooldown_s,
    )
    return Outcome(state, (*effects, report, _arm(marks, after_action=True)))


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


def _next_look_s(
    state: GuardState,
    snapshot: MemorySnapshot,
    marks: Levels | None,
    settings: GuardSettings,
    now_s: float,
) -> float | None:
    """Warned: half the time to the threshold at the current rate (5 ms .. 1 s);
    with the cache flusher on, every --flush-interval; else the recheck interval."""
    looks: list[float] = []
    if state.warned and marks is not None:
        rate = state.rate_bytes_s
        headroom = max(0, _act_level(marks) - snapshot.usage_bytes)
        if rate is None:
            wait_s = WARNED_LOOK_S[0]  # at once: a second reading gives the rate
        else:
            wait_s = WARNED_LOOK_S[1] if rate <= 0 else headroom / rate / 2
        looks.append(now_s + min(max(wait_s, WARNED_LOOK_S[0]), WARNED_LOOK_S[1]))
    if settings.cache_flush_above is not None:
        looks.append(now_s + min(settings.cache_flush_interval_s, settings.recheck_interval_s))
    return min(looks) if looks else None
