"""The graceful and evict policies in the pure step: the soft level, Terminate once
per episode, its endings (reported, or escalated to the container kill), dry run,
protection, and the effective settings a container's pod gives."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.effective import effective_settings
from memguard.policy.effects import (
    Act,
    Acted,
    Arm,
    Effect,
    Ending,
    Event,
    Flush,
    Flushed,
    LastChance,
    LookAgain,
    Prepare,
    Publish,
    Terminate,
    Terminated,
    Woke,
)
from memguard.policy.kinds import ReportKind
from memguard.policy.margin import SOFT_GAP_BYTES, Levels, levels
from memguard.policy.model import (
    MIB,
    GracefulVia,
    GuardSettings,
    MemorySnapshot,
    Policy,
)
from memguard.policy.overrides import NO_OVERRIDES, ContainerOverrides, MarginOverride
from memguard.policy.state import GuardState
from memguard.policy.step import step

LIMIT = 256 * MIB
NOW = 1000.0
GRACEFUL = GuardSettings(
    policy=Policy.GRACEFUL,
    check_granularity_bytes=2 * MIB,  # 4 CPUs
    cooldown_s=5.0,
    flush_cooldown_s=10.0,
)
EVICT = dataclasses.replace(GRACEFUL, policy=Policy.EVICT)


def _marks(settings: GuardSettings = GRACEFUL) -> Levels:
    marks = levels(LIMIT, settings)
    assert marks is not None
    return marks


MARKS = _marks()
SOFT: int = MARKS.soft or 0
HARD = MARKS.threshold
assert SOFT


def mib(usage_mib: float, cache_mib: float = 0) -> MemorySnapshot:
    return MemorySnapshot(int(usage_mib * MIB), LIMIT, int(cache_mib * MIB))


def armed(settings: GuardSettings = GRACEFUL, **fields: object) -> GuardState:
    marks = _marks(settings)
    fields.setdefault("warned", True)
    fields.setdefault("fixed_rate_bytes_s", 0.0)
    return GuardState(armed_threshold=marks.threshold, oom_kills_seen=0, **fields)  # type: ignore[arg-type]


def run(
    state: GuardState,
    snapshot: MemorySnapshot,
    event: Event,
    settings: GuardSettings = GRACEFUL,
    now_s: float = NOW,
) -> tuple[GuardState, tuple[Effect, ...]]:
    outcome = step(state, snapshot, event, settings, now_s)
    return outcome.state, outcome.effects


def only(effects: tuple[Effect, ...], kind: type) -> object:
    found = [e for e in effects if isinstance(e, kind)]
    assert len(found) == 1, effects
    return found[0]


# -- the soft level ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit_mib", "changes", "soft_mib"),
    [
        (256, {}, 256 - 25.6),  # 10 % of the limit
        (100, {}, 100 - 16),  # the 16 MiB floor
        (8 * 1024, {}, 8 * 1024 - 512),  # the 512 MiB ceiling
        (64, {}, 64 - 16),
        # a soft margin smaller than the threshold's is clamped under the threshold
        (256, {"soft_margin_ratio": 0.01, "min_soft_margin_bytes": 0}, 256 - 5.12 - 2),
    ],
)
def test_the_soft_level(limit_mib: int, changes: dict[str, object], soft_mib: float) -> None:
    settings = dataclasses.replace(GRACEFUL, **changes)  # type: ignore[arg-type]
    marks = levels(limit_mib * MIB, settings)
    assert marks is not None
    assert marks.soft is not None
    assert marks.soft == pytest.approx(soft_mib * MIB, abs=1)
    assert marks.soft < marks.threshold
    assert marks.warning is not None
    assert marks.warning < marks.soft


def test_only_the_graceful_policy_has_a_soft_level() -> None:
    for policy in (Policy.PROCESS, Policy.CONTAINER, Policy.EVICT, Policy.NOOP):
        marks = levels(LIMIT, dataclasses.replace(GRACEFUL, policy=policy))
        assert marks is not None
        assert marks.soft is None


@given(
    limit=st.integers(min_value=4 * MIB, max_value=1 << 40),
    ratio=st.floats(min_value=0.001, max_value=0.49),
    floor=st.integers(min_value=0, max_value=1 << 30),
)
def test_soft_is_always_under_the_threshold(limit: int, ratio: float, floor: int) -> None:
    settings = dataclasses.replace(
        GRACEFUL, soft_margin_ratio=ratio, min_soft_margin_bytes=floor, max_soft_margin_bytes=floor
    )
    marks = levels(limit, settings)
    assert marks is not None
    if marks.soft is not None:
        assert 0 < marks.soft <= marks.threshold - SOFT_GAP_BYTES


def test_the_soft_level_is_armed_with_the_others() -> None:
    _, effects = run(GuardState(), mib(10), Woke())
    assert effects == (Arm(HARD, False, MARKS.warning, MARKS.last_chance, SOFT),)


# -- graceful: terminate, then report or escalate ---------------------------------------


def test_under_the_soft_level_nothing_happens() -> None:
    _, effects = run(armed(), MemorySnapshot(SOFT - MIB, LIMIT), Woke())
    assert not any(isinstance(e, Act | Terminate) for e in effects)


def terminated_once(settings: GuardSettings = GRACEFUL) -> GuardState:
    """Over the soft level, no cache: Terminate, once."""
    state, effects = run(armed(settings), mib(232), Woke(), settings)
    terminate = only(effects, Terminate)
    assert isinstance(terminate, Terminate)
    assert terminate.via is settings.graceful_via
    assert terminate.escalate_bytes == HARD
    assert terminate.grace_s == 30.0  # no --grace-period, no pod: 30 s
    assert terminate.fall_back
    assert "too little page cache" in terminate.reason
    assert state.terminated_at_s == NOW
    return state


def test_crossing_soft_terminates_and_an_exit_is_reported() -> None:
    state = terminated_once()
    ending = Terminated(Ending.EXITED, GracefulVia.PROCESS, "SIGTERM to 7/app", 0.2)
    state, effects = run(state, mib(3), ending, now_s=NOW + 0.2)
    report = only(effects, Publish)
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.TERMINATE
    assert report.action == "terminated: the container exited after 0.200s"
    assert "SIGTERM to 7/app" in report.reason
    assert report.before.usage_bytes == 232 * MIB
    assert only(effects, Arm) == Arm(HARD, True, MARKS.warning, MARKS.last_chance, SOFT)
    assert state.cooldown_until_s == NOW + 0.2 + GRACEFUL.cooldown_s


@pytest.mark.parametrize(
    ("ending", "words"),
    [
        (Ending.LEVEL_REACHED, "escalated: usage reached the hard threshold 250.9Mi"),
        (Ending.GRACE_OVER, "escalated: the grace period of 30s is over"),
        (Ending.NO_TARGET, "escalated: no process memguard may signal"),
        (Ending.FAILED, "escalated: the pod could not be evicted"),
    ],
)
def test_an_escalation_is_the_container_kill_reported_as_escalated(
    ending: Ending, words: str
) -> None:
    state = terminated_once()
    event = Terminated(ending, GracefulVia.PROCESS, "", 0.1, HARD, 30.0)
    state, effects = run(state, mib(251), event, now_s=NOW + 0.1)
    act = only(effects, Act)
    assert isinstance(act, Act)
    assert act.policy is Policy.CONTAINER
    assert act.reason.startswith(words), act.reason
    assert "first: " in act.reason  # and why it tried the graceful way
    state, effects = run(state, mib(2), Acted(1, False, 0.01), now_s=NOW + 0.2)
    report = only(effects, Publish)
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.KILL_CONTAINER
    assert report.action == "killed container"
    assert report.reason.startswith(words)
    assert state.acting_policy is None


def test_a_refused_eviction_is_in_the_escalation_reason() -> None:
    state = terminated_once(dataclasses.replace(GRACEFUL, graceful_via=GracefulVia.EVICT))
    detail = "eviction refused: 429 Cannot evict pod as it would violate the pod's disruption"
    event = Terminated(Ending.LEVEL_REACHED, GracefulVia.EVICT, detail, 0.1, HARD, 30.0)
    _, effects = run(state, mib(251), event)
    act = only(effects, Act)
    assert isinstance(act, Act)
    assert "escalated: usage reached the hard threshold" in act.reason
    assert "429" in act.reason


def test_usage_already_at_the_hard_threshold_kills_without_a_terminate() -> None:
    _, effects = run(armed(), mib(252), Woke())
    act = only(effects, Act)
    assert isinstance(act, Act)
    assert act.policy is Policy.CONTAINER
    assert "escalated: usage 252.0MiB already at the hard threshold 250.9MiB" in act.reason


def test_a_flush_comes_first_and_terminate_after_it_did_not_help() -> None:
    state, effects = run(armed(), mib(232, cache_mib=10), Woke())
    flush = only(effects, Flush)
    assert isinstance(flush, Flush)
    state, effects = run(state, mib(231, cache_mib=1), Flushed(0.01), now_s=NOW + 0.01)
    terminate = only(effects, Terminate)
    assert isinstance(terminate, Terminate)
    assert terminate.reason == "still over threshold after a flush"


def test_a_flush_that_helps_terminates_nothing() -> None:
    state, _ = run(armed(), mib(232, cache_mib=20), Woke())
    _, effects = run(state, MemorySnapshot(SOFT - 10 * MIB, LIMIT), Flushed(0.01))
    assert not any(isinstance(e, Terminate | Act) for e in effects)
    report = only(effects, Publish)
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.FLUSH


def test_terminate_is_once_per_episode() -> None:
    state = terminated_once()
    ending = Terminated(Ending.EXITED, GracefulVia.PROCESS, "", 0.2)
    state, _ = run(state, mib(232), ending)
    # still over the soft level after the cooldown (it came back): the container kill
    later = NOW + GRACEFUL.cooldown_s + 1
    _, effects = run(state, mib(232), Woke(), now_s=later)
    act = only(effects, Act)
    assert isinstance(act, Act)
    assert act.reason.startswith("escalated: still over after the graceful try")
    # well under the soft level again: the episode is over, the next one terminates
    state, _ = run(state, MemorySnapshot(SOFT - 8 * MIB, LIMIT), Woke(), now_s=later)
    assert state.terminated_at_s is None
    _, effects = run(state, mib(232), Woke(), now_s=later + 1)
    assert isinstance(only(effects, Terminate), Terminate)


def test_the_last_chance_during_a_flush_is_the_container_kill() -> None:
    state, _ = run(armed(), mib(232, cache_mib=10), Woke())
    _, effects = run(state, mib(255), LastChance(255 * MIB))
    act = only(effects, Act)
    assert isinstance(act, Act)
    assert act.policy is Policy.CONTAINER


@pytest.mark.parametrize(
    ("via", "kind", "words"),
    [
        (GracefulVia.PROCESS, ReportKind.TERMINATE, "would terminate (dry run)"),
        (GracefulVia.EVICT, ReportKind.EVICT, "would evict pod (dry run)"),
        (GracefulVia.DELETE, ReportKind.DELETE, "would delete pod (dry run)"),
    ],
)
def test_a_dry_run_reports_what_it_would_do(via: GracefulVia, kind: ReportKind, words: str) -> None:
    settings = dataclasses.replace(GRACEFUL, dry_run=True, graceful_via=via)
    state = terminated_once(settings)
    event = Terminated(Ending.DRY_RUN, via, "main process 7/app", 0.0)
    _, effects = run(state, mib(232), event, settings)
    report = only(effects, Publish)
    assert isinstance(report, Publish)
    assert (report.kind, report.action) == (kind, words)
    assert not any(isinstance(e, Act) for e in effects)


def test_a_pod_gone_already_is_reported() -> None:
    settings = dataclasses.replace(GRACEFUL, graceful_via=GracefulVia.DELETE)
    state = terminated_once(settings)
    event = Terminated(Ending.POD_GONE, GracefulVia.DELETE, "delete: 404", 0.01)
    _, effects = run(state, mib(232), event, settings)
    report = only(effects, Publish)
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.DELETE
    assert report.action == "deleted pod: the pod was gone already"


# -- evict -------------------------------------------------------------------------------


def test_evict_acts_at_the_threshold_and_escalates_at_the_last_chance_level() -> None:
    marks = _marks(EVICT)
    _, effects = run(armed(EVICT), mib(240), Woke(), EVICT)
    assert not any(isinstance(e, Terminate | Act) for e in effects)  # no soft level
    state, effects = run(armed(EVICT), mib(252), Woke(), EVICT)
    terminate = only(effects, Terminate)
    assert isinstance(terminate, Terminate)
    assert terminate.via is GracefulVia.EVICT
    assert terminate.escalate_bytes == marks.last_chance
    assert not terminate.fall_back  # no SIGTERM instead: escalate
    event = Terminated(Ending.FAILED, GracefulVia.EVICT, "Kubernetes is off", 0.0)
    _, effects = run(state, mib(252), event, EVICT)
    act = only(effects, Act)
    assert isinstance(act, Act)
    assert act.reason.startswith("escalated: the pod could not be evicted (Kubernetes is off)")
    event = Terminated(Ending.LEVEL_REACHED, GracefulVia.EVICT, "429", 0.1, marks.last_chance)
    _, effects = run(state, mib(255), event, EVICT)
    act = only(effects, Act)
    assert isinstance(act, Act)
    assert "escalated: usage reached the last-chance level" in act.reason


def test_an_accepted_eviction_is_reported_when_the_container_exits() -> None:
    state, _ = run(armed(EVICT), mib(252), Woke(), EVICT)
    event = Terminated(Ending.EXITED, GracefulVia.EVICT, "eviction: 201", 1.5)
    _, effects = run(state, mib(1), event, EVICT)
    report = only(effects, Publish)
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.EVICT
    assert report.action == "evicted pod: the container exited after 1.500s"


# -- protection and overrides ------------------------------------------------------------


@pytest.mark.parametrize("policy", list(Policy))
def test_a_protected_pod_is_reported_never_acted_on(policy: Policy) -> None:
    settings = dataclasses.replace(
        GRACEFUL, policy=policy, protected="namespace kube-system is protected"
    )
    state, effects = run(armed(settings), mib(254), Woke(), settings)
    assert not any(isinstance(e, Act | Terminate) for e in effects)
    report = only(effects, Publish)
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.PROTECTED
    assert "namespace kube-system is protected" in report.action
    assert only(effects, LookAgain) == LookAgain(NOW + settings.cooldown_s)
    _, effects = run(state, mib(255), LastChance(255 * MIB), settings)
    assert not any(isinstance(e, Act | Terminate) for e in effects)


def test_effective_settings_from_the_pods_overrides() -> None:
    assert effective_settings(GRACEFUL, NO_OVERRIDES) is GRACEFUL
    overrides = ContainerOverrides(
        policy=Policy.PROCESS,
        margin=MarginOverride(bytes=8 * MIB),
        soft_margin=MarginOverride(ratio=0.2),
        pod_grace_period_s=5.0,
        protected="memguard's own pod",
    )
    settings = effective_settings(GRACEFUL, overrides)
    assert settings.policy is Policy.PROCESS
    assert settings.grace_period_s == 5.0  # the pod's terminationGracePeriodSeconds
    assert settings.protected == "memguard's own pod"
    marks = levels(LIMIT, dataclasses.replace(settings, policy=Policy.GRACEFUL))
    assert marks is not None
    assert marks.threshold == LIMIT - 8 * MIB
    assert marks.soft == LIMIT - int(0.2 * LIMIT)
    # memguard.io/grace-period beats the pod's; --grace-period beats the pod's too
    flag = dataclasses.replace(GRACEFUL, grace_period_s=1.0)
    assert effective_settings(flag, overrides).grace_period_s == 1.0
    annotated = dataclasses.replace(overrides, grace_period_s=2.0)
    assert effective_settings(flag, annotated).grace_period_s == 2.0


def test_a_steady_container_prepares_before_the_soft_level() -> None:
    assert MARKS.warning is not None
    _, effects = run(
        armed(warned=False), MemorySnapshot(MARKS.warning + MIB, LIMIT), Woke(), GRACEFUL
    )
    assert Prepare() in effects
