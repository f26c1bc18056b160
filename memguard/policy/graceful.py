"""The graceful path of the step: Terminate (SIGTERM, evict or delete the pod)
once per episode, the container kill after it; protected pods are reported only.

graceful acts at the soft level (the container kill at once at the hard
threshold); evict at the threshold, the container kill at the last-chance level.
A Pressure event (the swap trigger) takes this path whatever --policy says.
"""

from __future__ import annotations

from dataclasses import replace

from memguard.policy.effects import (
    ESCALATING,
    Act,
    Effect,
    Ending,
    LookAgain,
    Outcome,
    Pressure,
    Publish,
    Terminate,
    Terminated,
)
from memguard.policy.kinds import ReportKind
from memguard.policy.margin import Levels
from memguard.policy.model import (
    DEFAULT_GRACE_PERIOD_S,
    GracefulVia,
    GuardSettings,
    MemorySnapshot,
    Policy,
)
from memguard.policy.state import GuardState
from memguard.policy.turn import Turn, act_level, arm, under_last_chance
from memguard.units import format_size

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


def _grace_s(settings: GuardSettings) -> float:
    grace_s = settings.grace_period_s
    return DEFAULT_GRACE_PERIOD_S if grace_s is None else grace_s


def terminate_or_escalate(
    state: GuardState, reason: str, marks: Levels, turn: Turn, effects: list[Effect]
) -> Outcome:
    """graceful, evict: Terminate once per episode, the container kill after it (or
    at once when graceful's usage is already at the hard threshold)."""
    policy, usage = turn.settings.policy, turn.snapshot.usage_bytes
    hard = marks.threshold
    if state.terminated_at_s is not None:
        why = f"escalated: still over after the graceful try ({reason})"
        return escalate(state, why, effects)
    if policy is Policy.GRACEFUL and marks.soft is not None and usage >= hard:
        why = (
            f"escalated: usage {format_size(usage)} already at the hard "
            f"threshold {format_size(hard)}, no time to stop gracefully ({reason})"
        )
        return escalate(state, why, effects)
    graceful = policy is Policy.GRACEFUL
    via = turn.settings.graceful_via if graceful else GracefulVia.EVICT
    escalate_at = hard if graceful else (marks.last_chance or turn.snapshot.limit_bytes)
    asked = Terminate(via, reason, escalate_at, _grace_s(turn.settings), fall_back=graceful)
    state = replace(state, terminated_at_s=turn.now_s, act_reason=reason)
    return Outcome(state, (*effects, asked))


def pressure(state: GuardState, event: Pressure, turn: Turn, effects: list[Effect]) -> Outcome:
    """The swap trigger chose this container: Terminate (--graceful-via), escalated
    only when the grace period runs out; protected pods: reported only; a graceful
    try already under way: nothing more."""
    snapshot, settings = turn.snapshot, turn.settings
    if settings.protected is not None:
        return protected(state, snapshot, event.reason, turn, effects)
    if state.terminated_at_s is not None:
        return Outcome(state, (*effects, LookAgain(None)))
    asked = Terminate(
        settings.graceful_via,
        event.reason,
        None,  # no usage level: a swapping container sits at its limit
        _grace_s(settings),
        fall_back=True,
    )
    state = replace(
        state, terminated_at_s=turn.now_s, act_reason=event.reason, before_flush=snapshot
    )
    return Outcome(state, (*effects, asked))


def escalate(state: GuardState, reason: str, effects: list[Effect]) -> Outcome:
    state = replace(state, act_reason=reason, acting_policy=Policy.CONTAINER)
    return Outcome(state, (*effects, Act(Policy.CONTAINER, reason)))


def protected(
    state: GuardState, before: MemorySnapshot, reason: str, turn: Turn, effects: list[Effect]
) -> Outcome:
    """Would act, but the pod is protected: say so (once per cooldown), never act."""
    settings = turn.settings
    until_s = turn.now_s + settings.cooldown_s
    report = Publish(
        ReportKind.PROTECTED,
        before,
        f"not acting (policy {settings.policy.value}): {settings.protected}",
        reason,
        turn.snapshot,
    )
    state = replace(state, before_flush=None, flush_s=0.0, cooldown_until_s=until_s)
    return Outcome(state, (*effects, report, LookAgain(until_s)))


def episode_over(state: GuardState, turn: Turn) -> GuardState:
    """Usage back a margin under the act level after a Terminate: the episode is
    over (over it again, Terminate again)."""
    marks, snapshot = turn.marks, turn.snapshot
    if state.terminated_at_s is None or marks is None or not snapshot.limit_bytes:
        return state
    margin = snapshot.limit_bytes - marks.threshold
    if snapshot.usage_bytes < act_level(marks) - margin:
        return replace(state, terminated_at_s=None)  # well under again: the episode is over
    return state


def terminated(state: GuardState, event: Terminated, turn: Turn, effects: list[Effect]) -> Outcome:
    """A graceful try ended: the container exited (report), or escalate."""
    snapshot = turn.snapshot
    before = state.before_flush or snapshot
    detail = f" ({event.detail})" if event.detail else ""
    raced = (
        f"; the kernel's OOM killer killed in it ({turn.oom_kills}) meanwhile"
        if turn.oom_kills
        else ""
    )
    if event.ending in ESCALATING:
        why = _why_escalated(event, turn.settings)
        reason = f"escalated: {why}{detail}{raced}; first: {state.act_reason}"
        state = replace(state, flush_s=state.flush_s + event.duration_s)
        return escalate(state, reason, effects)
    report = Publish(
        TERMINATE_KINDS[event.via],
        before,
        _done(event, turn.oom_kills),
        f"{state.act_reason}{detail}{raced}",
        snapshot,
        event.duration_s + state.flush_s,
        oom_kills=turn.oom_kills,
    )
    state = replace(
        state,
        before_flush=None,
        flush_s=0.0,
        act_reason="",
        cooldown_until_s=turn.now_s + turn.settings.cooldown_s,
        freed_below_last_chance=under_last_chance(turn),
    )
    return Outcome(state, (*effects, report, arm(turn.marks, after_action=True)))


def _why_escalated(event: Terminated, settings: GuardSettings) -> str:
    if event.ending is Ending.LEVEL_REACHED:
        level = "hard threshold" if settings.policy is Policy.GRACEFUL else "last-chance level"
        return f"usage reached the {level} {format_size(event.level_bytes)}"
    if event.ending is Ending.GRACE_OVER:
        return f"the grace period of {event.grace_s:g}s is over"
    if event.ending is Ending.FAILED:
        return "the pod could not be evicted"
    return "no process memguard may signal"


def _done(event: Terminated, oom_kills: int = 0) -> str:
    done, would = _DONE_WORDS[event.via]
    if event.ending is Ending.DRY_RUN:
        return f"{would} (dry run)"
    if event.ending is Ending.POD_GONE:
        return f"{done}: the pod was gone already"
    if oom_kills:  # not a graceful exit: the kernel's OOM killer got there first
        return f"{done}, but the kernel's OOM killer killed in it within {event.duration_s:.3f}s"
    return f"{done}: the container exited after {event.duration_s:.3f}s"
