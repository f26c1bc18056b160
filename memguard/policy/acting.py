"""The step's act path: the decision table said act, or usage reached the
last-chance level during a flush. The kill policies (process, container, noop)
run at once (Act) and their outcome (Acted) becomes the report; graceful and
evict take policy.graceful's path (with no time left: the container kill);
protected pods are reported only.
"""

from __future__ import annotations

from dataclasses import replace

from memguard.policy.effects import Act, Acted, Effect, Outcome, Publish
from memguard.policy.graceful import protected, terminate_or_escalate
from memguard.policy.model import MemorySnapshot, Policy
from memguard.policy.state import GuardState
from memguard.policy.table import last_chance_reason
from memguard.policy.turn import Turn, arm, under_last_chance
from memguard.policy.words import action_words, kill_kind


def kill_policy(policy: Policy) -> Policy:
    """The kill a policy comes to when there is no time (graceful, evict: container)."""
    return Policy.CONTAINER if policy in (Policy.GRACEFUL, Policy.EVICT) else policy


def act(
    state: GuardState, before: MemorySnapshot, reason: str, turn: Turn, effects: list[Effect]
) -> Outcome:
    """The decision table said act: the policy (the report says usage before any
    flush, and why). Protected pods: reported only. graceful and evict: Terminate
    once per episode, the container kill after it (or at once at the hard threshold)."""
    settings = turn.settings
    if settings.protected is not None:
        return protected(state, before, reason, turn, effects)
    policy = settings.policy
    state = replace(state, before_flush=before)
    if policy in (Policy.GRACEFUL, Policy.EVICT) and turn.marks is not None:
        return terminate_or_escalate(state, reason, turn.marks, turn, effects)
    state = replace(state, act_reason=reason, acting_policy=kill_policy(policy))
    return Outcome(state, (*effects, Act(kill_policy(policy), reason)))


def last_chance(state: GuardState, turn: Turn, effects: list[Effect]) -> Outcome:
    """Usage reached the last-chance level during a flush: act at once, without
    waiting for the flush."""
    snapshot, settings = turn.snapshot, turn.settings
    reason = last_chance_reason(state, snapshot, settings, turn.now_s) or "last chance"
    before = state.before_flush or snapshot
    if settings.protected is not None:
        return protected(state, before, reason, turn, effects)
    policy = kill_policy(settings.policy)  # graceful, evict: no time left for either
    state = replace(state, before_flush=before, act_reason=reason, acting_policy=policy)
    return Outcome(state, (*effects, Act(policy, reason)))


def acted(state: GuardState, event: Acted, turn: Turn, effects: list[Effect]) -> Outcome:
    """The policy ran: report what it did (usage before any flush), then cooldown_s."""
    snapshot, settings = turn.snapshot, turn.settings
    kind = kill_kind(state.acting_policy or settings.policy, event.victims)
    before = state.before_flush or snapshot
    duration_s = event.duration_s + state.flush_s
    reason = state.act_reason
    if turn.oom_kills:  # CgroupOOM is reported first; this kill must not read as the only one
        reason += (
            f"; the kernel's OOM killer killed here too ({turn.oom_kills}) before this "
            "report: the race was lost or tied, a victim may have been the kernel's"
        )
    words = action_words(kind, settings.dry_run)
    report = Publish(kind, before, words, reason, snapshot, duration_s, oom_kills=turn.oom_kills)
    state = replace(
        state,
        before_flush=None,
        flush_s=0.0,
        act_reason="",
        acting_policy=None,
        cooldown_until_s=turn.now_s + settings.cooldown_s,
        freed_below_last_chance=under_last_chance(turn),
    )
    # Re-arm after every action: a fresh registration, whatever happened.
    return Outcome(state, (*effects, report, arm(turn.marks, after_action=True)))
