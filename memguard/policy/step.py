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
   - WATCH (over the threshold, but what the kernel cannot reclaim is under
     it): reported as a skip; look again within half the time that part
     needs to reach the act level at its own rate (1 ms .. hot recheck).
   - ACT: run the policy (Act); its outcome (event Acted) becomes the report
     (policy.words.kill_kind: process, container, no victim, noop), then
     cooldown_s.
   - IDLE: the page-cache flusher may flush (policy.cacheflush; event
     CacheFlushed is reported as OomGuardFlush); with it on, look again every
     --flush-interval.

Where: this module dispatches the events and follows the decision table;
policy.acting acts (Act, Acted, LastChance), policy.graceful is the graceful
path (Terminate, Terminated, Pressure, protected pods), policy.turn what they
share (Arm, the act level, the next look), policy.words a kill report's words.
"""

from __future__ import annotations

from dataclasses import replace

from memguard.policy.acting import act, acted, last_chance
from memguard.policy.cacheflush import CacheStep, cache_limit_bytes, decide_cache_flush
from memguard.policy.effects import (
    Acted,
    CacheFlush,
    CacheFlushed,
    Effect,
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
    Terminated,
    Unprepare,
    Woke,
)
from memguard.policy.graceful import episode_over, pressure, terminated
from memguard.policy.kinds import ReportKind
from memguard.policy.margin import levels
from memguard.policy.model import GuardSettings, MemorySnapshot
from memguard.policy.rates import flush_measured, new_oom_kills, sampled
from memguard.policy.state import GuardState
from memguard.policy.table import Decision, Step, decide, flush_request_bytes
from memguard.policy.turn import Turn, act_level, arm, next_look_s
from memguard.units import format_size

# -- the step --------------------------------------------------------------------------


def step(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: Event,
    settings: GuardSettings,
    now_s: float,
) -> Outcome:
    """What to do now; snapshot is fresh (read after the event)."""
    state = sampled(state, snapshot, now_s, isinstance(event, Woke) and event.light)
    oom_kills, state = new_oom_kills(state, snapshot)
    turn = Turn(snapshot, settings, now_s, levels(snapshot.limit_bytes, settings), oom_kills)
    effects = _oom_reports(event, turn)
    match event:  # the ends of an action re-arm themselves
        case Acted():
            return acted(state, event, turn, effects)
        case Terminated():
            return terminated(state, event, turn, effects)
    threshold = None if turn.marks is None else turn.marks.threshold
    if threshold != state.armed_threshold:
        state = replace(state, armed_threshold=threshold)
        return Outcome(state, (*effects, arm(turn.marks)))
    match event:
        case CacheFlushed():
            return _cache_flushed(state, event, turn, effects)
        case Pressure():
            return pressure(state, event, turn, effects)
        case LastChance():
            return last_chance(state, turn, effects)
        case _:
            return _reading(state, event, turn, effects)


def _oom_reports(event: Event, turn: Turn) -> list[Effect]:
    """New kernel OOM kills first (during a flush: what they freed is not the flush's)."""
    if not turn.oom_kills:
        return []
    during = " during a flush" if isinstance(event, Flushed | LastChance) else ""
    report = Publish(
        ReportKind.KERNEL_OOM,
        turn.snapshot,
        "kernel OOM killer acted",
        f"the kernel's OOM killer killed in this cgroup{during}",
        oom_kills=turn.oom_kills,
    )
    return [report]


def _reading(state: GuardState, event: Event, turn: Turn, effects: list[Effect]) -> Outcome:
    """Woke, Armed, Flushed: the warning level, then the decision table."""
    state, effects = _warning(state, turn, effects)
    state = episode_over(state, turn)
    if isinstance(event, Flushed) and state.before_flush is not None:
        return _flushed(state, event, state.before_flush, turn, effects)
    decision = _decide(state, turn, just_flushed=False)
    return _decided(state, turn.snapshot, decision, turn, effects)


def _warning(
    state: GuardState, turn: Turn, effects: list[Effect]
) -> tuple[GuardState, list[Effect]]:
    """Past the warning level: prepare the victims; well under it again: let go."""
    marks, snapshot = turn.marks, turn.snapshot
    if marks is None or marks.warning is None:
        return state, effects
    usage = snapshot.usage_bytes
    if not state.warned and usage >= marks.warning:
        return replace(state, warned=True), [*effects, Prepare()]
    margin = (snapshot.limit_bytes or marks.threshold) - marks.threshold
    if state.warned and usage < marks.warning - margin:
        return replace(state, warned=False), [*effects, Unprepare()]
    return state, effects


def _decide(state: GuardState, turn: Turn, just_flushed: bool) -> Decision:
    act_at = None if turn.marks is None else act_level(turn.marks)
    return decide(turn.snapshot, act_at, state, turn.settings, turn.now_s, just_flushed)


def _flushed(
    state: GuardState,
    event: Flushed,
    before: MemorySnapshot,
    turn: Turn,
    effects: list[Effect],
) -> Outcome:
    """The OOM path's flush returned: back under the threshold, report it; else on
    down the table with the usage from before the flush."""
    reclaimed = before.cache_bytes - turn.snapshot.cache_bytes
    state = flush_measured(state, event.duration_s, reclaimed)
    state = replace(state, before_flush=None, flush_s=event.duration_s)
    decision = _decide(state, turn, just_flushed=True)
    if decision.step is not Step.IDLE:
        return _decided(state, before, decision, turn, effects)
    if not turn.oom_kills:  # a drop the kernel's OOM killer made is not the flush's
        effects.append(
            Publish(
                ReportKind.FLUSH,
                before,
                "flushed page cache",
                "usage back under the threshold",
                turn.snapshot,
                event.duration_s,
            )
        )
    state = replace(state, flush_s=0.0)
    return Outcome(state, (*effects, LookAgain(next_look_s(state, turn))))


def _decided(
    state: GuardState,
    before: MemorySnapshot,
    decision: Decision,
    turn: Turn,
    effects: list[Effect],
) -> Outcome:
    state = replace(state, measured=decision.step is Step.MEASURE)
    if decision.step is Step.FLUSH and turn.marks is not None:
        request = flush_request_bytes(turn.snapshot, act_level(turn.marks))
        state = replace(state, last_flush_at_s=turn.now_s, before_flush=turn.snapshot)
        return Outcome(state, (*effects, Flush(request, turn.marks.last_chance)))
    if decision.step is Step.ACT:
        return act(state, before, decision.reason, turn, effects)
    if decision.step in (Step.SKIP, Step.WATCH):
        return _skip(state, before, decision, turn, effects)
    if decision.step is Step.IDLE:
        return _idle(state, turn, effects)
    return Outcome(state, (*effects, LookAgain(decision.retry_at_s)))


def _skip(
    state: GuardState,
    before: MemorySnapshot,
    decision: Decision,
    turn: Turn,
    effects: list[Effect],
) -> Outcome:
    """Left to the kernel's reclaim: reported at most once per cooldown_s."""
    last = state.skip_reported_at_s
    if last is None or turn.now_s - last >= turn.settings.cooldown_s:
        state = replace(state, skip_reported_at_s=turn.now_s)
        effects.append(
            Publish(ReportKind.SKIP, before, "left to the kernel", decision.reason, turn.snapshot)
        )
    return Outcome(state, (*effects, LookAgain(decision.retry_at_s)))


def _idle(state: GuardState, turn: Turn, effects: list[Effect]) -> Outcome:
    """Under the threshold: the page-cache flusher's turn (--flush-cache-above)."""
    snapshot, settings, now_s = turn.snapshot, turn.settings, turn.now_s
    cache = decide_cache_flush(snapshot, settings.cache_flush_above, state, settings, now_s)
    if cache.step is CacheStep.UNLIMITED and not state.unlimited_noted:
        state = replace(state, unlimited_noted=True)
        effects.append(NoteUnlimited())
    if cache.step is CacheStep.FLUSH:
        state = replace(state, last_cache_flush_at_s=now_s, before_flush=snapshot)
        return Outcome(state, (*effects, CacheFlush(cache.request_bytes)))
    return Outcome(state, (*effects, LookAgain(next_look_s(state, turn))))


def _cache_flushed(
    state: GuardState, event: CacheFlushed, turn: Turn, effects: list[Effect]
) -> Outcome:
    """The page-cache flusher's flush returned: report it (OomGuardFlush)."""
    snapshot = turn.snapshot
    before = state.before_flush or snapshot
    limit = turn.settings.cache_flush_above
    above = cache_limit_bytes(limit, before.limit_bytes) if limit is not None else None
    reason = (
        f"page cache {format_size(before.reclaimable_cache_bytes)} was over "
        f"--flush-cache-above {format_size(above)}"
    )
    report = Publish(
        ReportKind.FLUSH, before, "flushed page cache", reason, snapshot, event.duration_s
    )
    state = replace(state, before_flush=None)
    return Outcome(state, (*effects, report, LookAgain(next_look_s(state, turn))))
