"""The guard's step: the decision table (idle, cooldown, flush, skip, act), the
state machine over events (arm, flush, act, report), OOM kill counts, and
properties over random event sequences."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.effects import (
    Act,
    Acted,
    Arm,
    Armed,
    CacheFlush,
    CacheFlushed,
    Effect,
    Ending,
    Event,
    Flush,
    Flushed,
    LastChance,
    LookAgain,
    Prepare,
    Pressure,
    Publish,
    Terminate,
    Terminated,
    Unprepare,
    Woke,
)
from memguard.policy.kinds import ReportKind
from memguard.policy.margin import Levels, levels, threshold_bytes
from memguard.policy.model import (
    MIB,
    CacheLimit,
    GracefulVia,
    GuardSettings,
    MemorySnapshot,
    Policy,
)
from memguard.policy.rates import (
    MAX_SAMPLE_GAP_S,
    flush_measured,
    light_snapshot,
    new_oom_kills,
    sampled,
    samples_of,
)
from memguard.policy.state import GuardState
from memguard.policy.step import step
from memguard.policy.table import (
    MEASURE_S,
    REACTION_BUDGET_S,
    Step,
    decide,
    last_chance_reason,
)

SETTINGS = GuardSettings(
    max_cache_ratio=0.5, flush_cooldown_s=10.0, cooldown_s=5.0, hot_recheck_interval_s=0.25
)
LIMIT = 100 * MIB
THRESHOLD = 98 * MIB
NOW = 1000.0
HOT = NOW + 0.25
STEADY = 0.0  # readings close together found nothing growing: the fill rate is known
FRESH = GuardState(fixed_rate_bytes_s=STEADY)
FLUSHED_5S_AGO = GuardState(last_flush_at_s=NOW - 5.0, fixed_rate_bytes_s=STEADY)


def snap(usage_mib: float, cache_mib: float = 0, shmem_mib: float = 0) -> MemorySnapshot:
    return MemorySnapshot(
        usage_bytes=int(usage_mib * MIB),
        limit_bytes=LIMIT,
        cache_bytes=int(cache_mib * MIB),
        shmem_bytes=int(shmem_mib * MIB),
    )


IN_COOLDOWN = GuardState(cooldown_until_s=NOW + 3)
REFILLING_IN_COOLDOWN = GuardState(cooldown_until_s=NOW + 3, freed_below_last_chance=True)
COOLDOWN_ENDS_NOW = GuardState(cooldown_until_s=NOW)
FLUSHED_10S_AGO = GuardState(last_flush_at_s=NOW - 10.0, fixed_rate_bytes_s=STEADY)
RATE_UNKNOWN = GuardState()
# what the kernel cannot reclaim grows at 1 GiB/s; a 40 MiB flush (~80 ms) is too slow
FILLING_1GIB_S = GuardState(fixed_rate_bytes_s=1024 * MIB, rate_bytes_s=0.0)
FILLING_512MIB_S = GuardState(fixed_rate_bytes_s=512 * MIB, rate_bytes_s=0.0)
IN_COOLDOWN_FLUSHED = GuardState(
    cooldown_until_s=NOW + 3,
    last_flush_at_s=NOW - 5.0,
    fixed_rate_bytes_s=STEADY,
    freed_below_last_chance=True,
)
MEASURED_STILL_UNKNOWN = GuardState(measured=True)

# (id, snapshot, state, step, retry_at_s); the threshold is 98 MiB of a 100 MiB limit.
DECISIONS = [
    ("below-threshold", snap(97.9), FRESH, Step.IDLE, None),
    ("below-threshold-beats-cooldown", snap(97.9), IN_COOLDOWN, Step.IDLE, None),
    ("at-threshold-flushes", snap(98, 10), FRESH, Step.FLUSH, HOT),
    ("cooldown-until-its-end", snap(98.5, 10), IN_COOLDOWN, Step.COOLDOWN, NOW + 3),
    ("cooldown-ends-at-last-chance", snap(99.5, 0.5), REFILLING_IN_COOLDOWN, Step.ACT, HOT),
    ("cooldown-holds-if-nothing-was-freed", snap(99.5, 0.5), IN_COOLDOWN, Step.COOLDOWN, NOW + 3),
    ("cooldown-at-last-chance-with-cache", snap(99.5, 10), IN_COOLDOWN_FLUSHED, Step.WATCH, HOT),
    ("cooldown-over-exactly-at-its-end", snap(99, 0.5), COOLDOWN_ENDS_NOW, Step.ACT, HOT),
    ("flush-could-help", snap(99, 10), FRESH, Step.FLUSH, HOT),
    ("flush-could-just-help", snap(99, 1.5), FRESH, Step.FLUSH, HOT),
    ("flush-lands-exactly-on-threshold", snap(99, 1), FRESH, Step.ACT, HOT),
    ("flush-cannot-help", snap(99, 0.5), FRESH, Step.ACT, HOT),
    ("shmem-is-not-flushable", snap(99, 20, shmem_mib=20), FRESH, Step.ACT, HOT),
    ("flush-in-cooldown-cache-heavy", snap(99, 60), FLUSHED_5S_AGO, Step.SKIP, HOT),
    ("flush-in-cooldown-shmem-heavy", snap(99, 60, 60), FLUSHED_5S_AGO, Step.ACT, HOT),
    ("flush-in-cooldown-the-kernel-reclaims", snap(99, 40), FLUSHED_5S_AGO, Step.WATCH, HOT),
    ("cache-ratio-at-max-is-watched", snap(100, 50), FLUSHED_5S_AGO, Step.WATCH, HOT),
    ("flush-too-slow-is-watched", snap(99, 40), FILLING_1GIB_S, Step.WATCH, NOW + 39 / 1024 / 2),
    ("urgent-over-the-threshold-acts", snap(99, 1.2), FILLING_1GIB_S, Step.ACT, HOT),
    ("watched-at-least-1ms-apart", snap(99, 1.8), FILLING_512MIB_S, Step.WATCH, NOW + 0.001),
    ("shmem-alone-over-the-threshold", snap(99, 98.5, 98.5), FRESH, Step.SKIP, HOT),
    ("shmem-under-the-threshold-acts", snap(99, 90, 90), FRESH, Step.ACT, HOT),
    ("flush-cooldown-over", snap(99, 60), FLUSHED_10S_AGO, Step.FLUSH, HOT),
    ("rate-unknown-measures-first", snap(99, 10), RATE_UNKNOWN, Step.MEASURE, NOW + MEASURE_S),
    ("rate-unknown-hopeless-flush-acts", snap(99, 0.5), RATE_UNKNOWN, Step.ACT, HOT),
    ("measured-once-still-unknown-flushes", snap(99, 10), MEASURED_STILL_UNKNOWN, Step.FLUSH, HOT),
]


@pytest.mark.parametrize(
    ("snapshot", "state", "step", "retry_at_s"),
    [pytest.param(*case[1:], id=case[0]) for case in DECISIONS],
)
def test_decision_table(
    snapshot: MemorySnapshot, state: GuardState, step: Step, retry_at_s: float | None
) -> None:
    decision = decide(snapshot, THRESHOLD, state, SETTINGS, NOW)
    assert decision.step is step
    assert decision.retry_at_s == retry_at_s
    assert decision.reason


@pytest.mark.parametrize("state", [FRESH, IN_COOLDOWN, FLUSHED_5S_AGO])
def test_no_threshold_means_idle(state: GuardState) -> None:
    decision = decide(snap(500, 10), None, state, SETTINGS, NOW)
    assert decision.step is Step.IDLE
    assert decision.retry_at_s is None


def test_unlimited_cgroup_has_no_threshold_and_idles() -> None:
    snapshot = MemorySnapshot(usage_bytes=10 * 1024 * MIB, limit_bytes=None)
    threshold = threshold_bytes(snapshot.limit_bytes, SETTINGS)
    assert decide(snapshot, threshold, FRESH, SETTINGS, NOW).step is Step.IDLE


def test_hopeless_flush_is_skipped_when_cache_is_a_large_share() -> None:
    settings = GuardSettings(max_cache_ratio=0.001)
    decision = decide(snap(99, 0.5), THRESHOLD, FRESH, settings, NOW)
    assert decision.step is Step.SKIP
    assert "left to the kernel" in decision.reason


def test_act_reason_says_why() -> None:
    decision = decide(snap(99, 0.5), THRESHOLD, FRESH, SETTINGS, NOW)
    assert decision.step is Step.ACT
    assert "too little page cache" in decision.reason


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (FLUSHED_5S_AGO, "no flush: the last was 5.0s ago (flush cooldown 10s)"),
        (FILLING_1GIB_S, "no flush: 40.0MiB (~80.0ms) would not finish in time"),
    ],
)
def test_watch_reason_says_what_the_kernel_cannot_reclaim_and_why_no_flush(
    state: GuardState, reason: str
) -> None:
    decision = decide(snap(99, 40), THRESHOLD, state, SETTINGS, NOW)
    assert decision.step is Step.WATCH
    assert "what the kernel cannot reclaim (59.0MiB, filling at " in decision.reason
    assert "is under it: left to the kernel's reclaim" in decision.reason
    assert reason in decision.reason


def test_reclaimable_cache_excludes_shmem_and_never_goes_negative() -> None:
    assert snap(99, 30, shmem_mib=10).reclaimable_cache_bytes == 20 * MIB
    assert snap(99, 10, shmem_mib=30).reclaimable_cache_bytes == 0


def armed(threshold: int | None = THRESHOLD, **fields: object) -> GuardState:
    """Armed, past the warning level already (its victims prepared)."""
    fields.setdefault("warned", True)
    return GuardState(armed_threshold=threshold, oom_kills_seen=0, **fields)  # type: ignore[arg-type]


def effects_of(
    state: GuardState, snapshot: MemorySnapshot, event: Event, now_s: float = NOW
) -> tuple[GuardState, tuple[Effect, ...]]:
    outcome = step(state, snapshot, event, SETTINGS_2MIB, now_s)
    return outcome.state, outcome.effects


# 2 MiB margin of 100 MiB: the threshold is THRESHOLD for these step tests
SETTINGS_2MIB = GuardSettings(
    max_cache_ratio=0.5,
    flush_cooldown_s=10.0,
    cooldown_s=5.0,
    hot_recheck_interval_s=0.25,
    min_margin_bytes=2 * MIB,
    max_margin_bytes=2 * MIB,
)


def _marks() -> Levels:
    marks = levels(LIMIT, SETTINGS_2MIB)
    assert marks is not None
    return marks


MARKS = _marks()


def test_a_new_guard_arms_every_level_first_and_reads_again() -> None:
    state, effects = effects_of(GuardState(), snap(99, 0), Woke())
    assert effects == (Arm(THRESHOLD, False, MARKS.warning, MARKS.last_chance),)
    assert state.armed_threshold == THRESHOLD
    _, effects = effects_of(state, snap(99, 0), Armed())
    reason = "over threshold, too little page cache for a flush to help"
    assert effects == (Prepare(), Act(Policy.CONTAINER, reason))


def test_a_new_limit_rearms_before_deciding() -> None:
    snapshot = MemorySnapshot(99 * MIB, 200 * MIB)
    state, effects = effects_of(armed(), snapshot, Woke())
    marks = levels(200 * MIB, SETTINGS_2MIB)
    assert marks is not None
    assert effects == (Arm(marks.threshold, False, marks.warning, marks.last_chance),)
    assert state.armed_threshold == threshold_bytes(200 * MIB, SETTINGS_2MIB)


def test_an_action_is_reported_then_cooled_down_and_rearmed() -> None:
    state, effects = effects_of(armed(), snap(99, 0.5), Woke())
    assert isinstance(effects[0], Act)
    state, effects = effects_of(state, snap(4), Acted(victims=1, gone=False, duration_s=0.01))
    report, rearm = effects
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.KILL_CONTAINER
    assert report.before.usage_bytes == 99 * MIB  # usage before, after: the new snapshot
    assert report.after is not None
    assert report.after.usage_bytes == 4 * MIB
    assert "too little page cache" in report.reason
    assert rearm == Arm(THRESHOLD, True, MARKS.warning, MARKS.last_chance)
    assert state.cooldown_until_s == NOW + SETTINGS_2MIB.cooldown_s
    _, effects = effects_of(state, snap(98.5, 10), Armed(), NOW + 1)
    assert effects == (LookAgain(state.cooldown_until_s),)  # cooling down
    # refilled to the last-chance level within the cooldown: the next emergency is ours
    assert state.freed_below_last_chance  # the kill brought usage down to 4 MiB
    _, effects = effects_of(state, snap(99.5, 0.5), Woke(), NOW + 1)
    assert isinstance(effects[0], Act)
    assert "at the last-chance level again, during the cooldown" in effects[0].reason


@pytest.mark.parametrize(
    ("policy", "victims", "kind", "words"),
    [
        (Policy.PROCESS, 1, ReportKind.KILL_PROCESS, "killed process"),
        (Policy.CONTAINER, 3, ReportKind.KILL_CONTAINER, "killed container"),
        (Policy.CONTAINER, 0, ReportKind.NO_VICTIM, "no process memguard may kill"),
        (Policy.NOOP, 0, ReportKind.NOOP, "reported only (policy noop)"),
    ],
)
def test_what_an_action_is_reported_as(
    policy: Policy, victims: int, kind: ReportKind, words: str
) -> None:
    settings = GuardSettings(policy=policy, min_margin_bytes=2 * MIB, max_margin_bytes=2 * MIB)
    outcome = step(armed(), snap(99), Acted(victims, gone=False, duration_s=0), settings, NOW)
    report = outcome.effects[0]
    assert isinstance(report, Publish)
    assert report.kind is kind
    assert words in report.action


def test_a_flush_that_brings_usage_under_is_reported_as_a_flush() -> None:
    state, effects = effects_of(armed(fixed_rate_bytes_s=STEADY), snap(99, 10), Woke())
    assert effects == (Flush(flush_request(snap(99, 10)), MARKS.last_chance),)
    state, effects = effects_of(state, snap(80, 0), Flushed(0.1), NOW + 0.1)
    unprepare, report, look = effects  # far under the warning level again: pidfds go
    assert unprepare == Unprepare()
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.FLUSH
    assert (report.before.usage_bytes, report.after and report.after.usage_bytes) == (
        99 * MIB,
        80 * MIB,
    )
    assert report.duration_s == pytest.approx(0.1)
    assert look == LookAgain(None)


def test_a_flush_that_does_not_help_goes_on_to_act_with_the_usage_from_before() -> None:
    state, _ = effects_of(armed(fixed_rate_bytes_s=STEADY), snap(99, 10), Woke())
    state, effects = effects_of(state, snap(99, 0.5), Flushed(0.2), NOW + 0.2)
    assert isinstance(effects[0], Act)
    _, effects = effects_of(state, snap(3), Acted(1, gone=False, duration_s=0.01), NOW + 0.3)
    report = effects[0]
    assert isinstance(report, Publish)
    assert report.before.usage_bytes == 99 * MIB
    assert report.duration_s == pytest.approx(0.21)  # the flush counts in the action's time


def flush_request(snapshot: MemorySnapshot) -> int:
    margin = LIMIT - THRESHOLD
    return min(snapshot.usage_bytes - (THRESHOLD - margin), snapshot.reclaimable_cache_bytes)


def test_a_skip_is_reported_once_per_cooldown() -> None:
    state = armed(last_flush_at_s=NOW - 1)  # in flush cooldown: mostly cache is skipped
    reports = []
    for offset_s in (0.0, 0.25, 0.5, 4.9, 5.0, 5.25):
        state, effects = effects_of(state, snap(99, 60), Woke(), NOW + offset_s)
        reports += [e for e in effects if isinstance(e, Publish)]
        assert effects[-1] == LookAgain(NOW + offset_s + SETTINGS_2MIB.hot_recheck_interval_s)
    assert [r.kind for r in reports] == [ReportKind.SKIP, ReportKind.SKIP]


def test_kernel_oom_kills_are_reported_before_anything_else() -> None:
    snapshot = MemorySnapshot(10 * MIB, LIMIT, oom_kill_count=2)
    _, effects = effects_of(armed(), snapshot, Woke())
    report = effects[0]
    assert isinstance(report, Publish)
    assert (report.kind, report.oom_kills) == (ReportKind.KERNEL_OOM, 2)


def test_the_cache_flusher_flushes_when_idle_and_reports_it() -> None:
    settings = GuardSettings(
        cache_flush_above=CacheLimit(size_bytes=16 * MIB),
        cache_flush_interval_s=30.0,
        min_margin_bytes=2 * MIB,
        max_margin_bytes=2 * MIB,
    )
    outcome = step(armed(warned=False), snap(50, 40), Woke(), settings, NOW)
    assert outcome.effects == (CacheFlush(24 * MIB),)
    outcome = step(outcome.state, snap(12, 2), CacheFlushed(0.05), settings, NOW + 0.05)
    report, look = outcome.effects
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.FLUSH
    assert "over --flush-cache-above 16.0MiB" in report.reason
    assert look == LookAgain(NOW + 0.05 + 30.0)


@pytest.mark.parametrize(
    ("seen", "count", "fresh"),
    [(None, 0, 0), (None, 3, 0), (3, 3, 0), (3, 5, 2), (5, 2, 0)],  # 5 -> 2: counter reset
)
def test_new_oom_kills(seen: int | None, count: int, fresh: int) -> None:
    state = GuardState(oom_kills_seen=seen)
    snapshot = MemorySnapshot(usage_bytes=0, limit_bytes=LIMIT, oom_kill_count=count)
    got, after = new_oom_kills(state, snapshot)
    assert got == fresh
    assert after.oom_kills_seen == count


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=30))
def test_new_oom_kills_is_never_negative_and_sums_increases(counts: list[int]) -> None:
    state, total = FRESH, 0
    for count in counts:
        fresh, state = new_oom_kills(state, MemorySnapshot(0, LIMIT, oom_kill_count=count))
        assert fresh >= 0
        total += fresh
    expected = sum(max(0, b - a) for a, b in itertools.pairwise(counts))
    assert total == expected


settings_st = st.builds(
    GuardSettings,
    max_cache_ratio=st.floats(min_value=0, max_value=1),
    flush_cooldown_s=st.floats(min_value=0, max_value=60),
    cooldown_s=st.floats(min_value=0, max_value=60),
    hot_recheck_interval_s=st.floats(min_value=0.001, max_value=10),
)


@st.composite
def snapshots(draw: st.DrawFn, min_usage_bytes: int = 0) -> MemorySnapshot:
    usage = draw(st.integers(min_value=min_usage_bytes, max_value=LIMIT + LIMIT // 10))
    cache = draw(st.integers(min_value=0, max_value=usage))
    shmem = draw(st.integers(min_value=0, max_value=cache))
    return MemorySnapshot(usage, LIMIT, cache_bytes=cache, shmem_bytes=shmem)


states = st.builds(
    GuardState,
    last_flush_at_s=st.none() | st.floats(min_value=0, max_value=2 * NOW),
    cooldown_until_s=st.none() | st.floats(min_value=0, max_value=2 * NOW),
)


@given(snapshot=snapshots(), threshold=st.integers(1, LIMIT), state=states, settings=settings_st)
def test_never_acts_below_threshold(
    snapshot: MemorySnapshot, threshold: int, state: GuardState, settings: GuardSettings
) -> None:
    decision = decide(snapshot, threshold, state, settings, NOW)
    if snapshot.usage_bytes < threshold:
        assert decision.step is Step.IDLE
    else:
        assert decision.step is not Step.IDLE


@st.composite
def event_sequences(draw: st.DrawFn) -> list[tuple[float, MemorySnapshot, int]]:
    """(seconds since the last look, snapshot, limit changes) the guard goes through."""
    return draw(
        st.lists(
            st.tuples(
                st.floats(min_value=0, max_value=20),
                snapshots(THRESHOLD - 4 * MIB),
                st.integers(min_value=0, max_value=2),
            ),
            max_size=40,
        )
    )


@given(settings=settings_st, sequence=event_sequences())
def test_any_event_sequence_keeps_the_rules(
    settings: GuardSettings, sequence: list[tuple[float, MemorySnapshot, int]]
) -> None:
    """A guard driven through random wake-ups, carrying the effects out as the real
    one does: never acts while what the kernel cannot reclaim is under the threshold
    (unless it reaches the limit within the reaction budget), in a cooldown only
    from the last-chance level, never flushes twice within flush_cooldown_s, arms
    before it decides, reports every action once."""
    settings = dataclasses.replace(settings, min_margin_bytes=2 * MIB, max_margin_bytes=2 * MIB)
    state, now_s = GuardState(), NOW
    flushes: list[float] = []
    acts = reports = 0
    for delay_s, snapshot, oom_kills in sequence:
        now_s += delay_s
        snapshot = dataclasses.replace(snapshot, oom_kill_count=oom_kills)
        event: Event = Woke()
        for _ in range(6):  # an effect with an outcome is followed by its event
            threshold = threshold_bytes(snapshot.limit_bytes, settings)
            before = state
            outcome = step(state, snapshot, event, settings, now_s)
            state = outcome.state
            event_next: Event | None = None
            for effect in outcome.effects:
                if isinstance(effect, Arm):
                    event_next = Armed()
                elif isinstance(effect, Act):
                    assert before.armed_threshold == threshold  # armed before deciding
                    assert threshold is not None
                    urgent = effect.reason.startswith("what the kernel cannot reclaim is filling")
                    fixed = snapshot.usage_bytes - snapshot.reclaimable_cache_bytes
                    if urgent:  # filling too fast: the limit within the reaction budget
                        rate = state.fixed_rate_bytes_s
                        assert rate is not None
                        assert rate > 0
                        assert snapshot.limit_bytes is not None
                        room = snapshot.limit_bytes - fixed
                        assert room / rate < REACTION_BUDGET_S
                    elif effect.reason != "still over threshold after a flush":
                        # never while the kernel can reclaim its way under the threshold
                        # (after a flush, what it left is not reclaimable now)
                        assert fixed >= threshold
                    in_cooldown = (
                        before.cooldown_until_s is not None and now_s < before.cooldown_until_s
                    )
                    marks = levels(snapshot.limit_bytes, settings)
                    assert marks is not None
                    last_chance = marks.last_chance or snapshot.limit_bytes or 0
                    assert not in_cooldown or urgent or snapshot.usage_bytes >= last_chance
                    acts += 1
                    event_next = Acted(1, gone=False, duration_s=0.0)
                    snapshot = dataclasses.replace(snapshot, usage_bytes=0)  # the kill freed it
                elif isinstance(effect, Flush):
                    flushes.append(now_s)
                    event_next = Flushed(0.0)
                elif isinstance(effect, Publish) and effect.kind in KILLS:
                    reports += 1
            if event_next is None:
                break
            event = event_next
    assert acts == reports
    for earlier, later in itertools.pairwise(flushes):
        assert later - earlier >= settings.flush_cooldown_s


KILLS = frozenset({ReportKind.KILL_CONTAINER, ReportKind.KILL_PROCESS, ReportKind.NO_VICTIM})


# -- issue 11: the race ----------------------------------------------------------------


def rated(fixed_rate_mib_s: float | None, rate_mib_s: float | None = None) -> GuardState:
    """Armed and warned, with fill rates known (MiB/s)."""
    to_bytes = None if fixed_rate_mib_s is None else fixed_rate_mib_s * MIB
    total = rate_mib_s if rate_mib_s is not None else fixed_rate_mib_s
    return armed(fixed_rate_bytes_s=to_bytes, rate_bytes_s=None if total is None else total * MIB)


@pytest.mark.parametrize(
    ("fixed_rate_mib_s", "expected"),
    [
        (None, Step.MEASURE),  # no rate known yet: a second reading first, 1 ms later
        (0.0, Step.FLUSH),  # only page cache grows: the kernel reclaims it at the limit
        (10.0, Step.FLUSH),  # 21 MiB of room at 10 MiB/s: 2 s for a ~40 ms flush
        # 21 MiB at 1.8 GiB/s: 12 ms, a flush of 20 MiB takes longer; 78.5 MiB that no
        # flush drops is far under the threshold: the kernel reclaims, memguard watches
        (1800.0, Step.WATCH),
    ],
)
def test_a_flush_is_tried_only_when_it_can_finish_before_the_limit(
    fixed_rate_mib_s: float | None, expected: Step
) -> None:
    snapshot = snap(98.5, 20)  # 78.5 MiB that no flush drops, 20 MiB of cache
    decision = decide(snapshot, THRESHOLD, rated(fixed_rate_mib_s), SETTINGS, NOW)
    assert decision.step is expected
    if expected is Step.WATCH:
        assert "would not finish in time" in decision.reason


def test_the_measured_flush_speed_decides_the_next_time() -> None:
    state = rated(1000.0)  # 21.5 MiB of room: 21 ms
    snapshot = snap(98.5, 20)
    assert decide(snapshot, THRESHOLD, state, SETTINGS, NOW).step is Step.WATCH  # 2 ms/MiB guess
    for _ in range(6):  # this cgroup flushes 20 MiB in 2 ms: 0.1 ms/MiB
        state = flush_measured(state, 0.002, 20 * MIB)
    assert decide(snapshot, THRESHOLD, state, SETTINGS, NOW).step is Step.FLUSH


def test_filling_faster_than_it_can_react_acts_before_the_threshold() -> None:
    snapshot = snap(97, 0.5)  # under the threshold (98), past the warning level
    room_mib = 3.5  # to the limit, with the 0.5 MiB of cache the kernel would reclaim
    fast = rated(room_mib / (2 * REACTION_BUDGET_S))  # twice the budget away
    assert decide(snapshot, THRESHOLD, fast, SETTINGS, NOW).step is Step.IDLE
    faster = rated(room_mib / (REACTION_BUDGET_S / 2))  # half the budget away
    decision = decide(snapshot, THRESHOLD, faster, SETTINGS, NOW)
    assert decision.step is Step.ACT
    assert f"the limit is {REACTION_BUDGET_S / 2 * 1000:.1f}ms away" in decision.reason


def test_page_cache_filling_fast_is_never_urgent() -> None:
    snapshot = snap(97, 90)  # almost all cache: the kernel reclaims it at the limit
    decision = decide(snapshot, THRESHOLD, rated(0.0, rate_mib_s=5000.0), SETTINGS, NOW)
    assert decision.step is Step.IDLE


def test_the_last_chance_during_a_flush_acts_for_memory_a_flush_cannot_drop() -> None:
    state = rated(1800.0)
    anon = snap(99.5, 1)
    assert last_chance_reason(state, anon, SETTINGS_2MIB, NOW) is not None
    cache = snap(99.5, 60)  # the flush and the kernel's reclaim can still cope
    assert last_chance_reason(rated(0.0), cache, SETTINGS_2MIB, NOW) is None
    below = snap(98.8, 1)  # not at the last-chance level yet (99 MiB)
    assert last_chance_reason(state, below, SETTINGS_2MIB, NOW) is None
    _, effects = effects_of(state, anon, LastChance(anon.usage_bytes))
    assert isinstance(effects[-1], Act)
    assert "last-chance level" in effects[-1].reason


def test_a_kernel_oom_kill_during_a_flush_is_not_credited_to_the_flush() -> None:
    state, _ = effects_of(armed(), snap(99, 10), Woke())
    after = MemorySnapshot(20 * MIB, LIMIT, cache_bytes=0, oom_kill_count=1)  # the kernel killed
    _, effects = effects_of(state, after, Flushed(0.3), NOW + 0.3)
    kinds = [e.kind for e in effects if isinstance(e, Publish)]
    assert kinds == [ReportKind.KERNEL_OOM]
    report = next(e for e in effects if isinstance(e, Publish))
    assert report.reason.endswith("during a flush")


@pytest.mark.parametrize("policy", [Policy.PROCESS, Policy.CONTAINER])
def test_the_warning_level_prepares_the_victims_and_letting_go_below_it(policy: Policy) -> None:
    settings = dataclasses.replace(SETTINGS_2MIB, policy=policy)
    calm = armed(warned=False)
    assert MARKS.warning is not None
    outcome = step(calm, snap(MARKS.warning / MIB + 0.1), Woke(), settings, NOW)
    assert outcome.state.warned
    assert outcome.effects[0] == Prepare()
    look = outcome.effects[-1]
    assert isinstance(look, LookAgain)
    assert look.at_s == pytest.approx(NOW + 0.001)  # a second reading soon: the rate
    back = step(outcome.state, snap(80), Woke(), settings, NOW + 1)
    assert not back.state.warned
    assert back.effects[0] == Unprepare()


def test_a_light_reading_moves_the_usage_rate_only() -> None:
    state = armed(sample_usage_bytes=90 * MIB, sample_at_s=NOW, sample_fixed_bytes=90 * MIB)
    state = dataclasses.replace(state, sample_fixed_at_s=NOW)
    light = step(state, snap(95, 0), Woke(light=True), SETTINGS_2MIB, NOW + 0.01).state
    assert light.rate_bytes_s == pytest.approx(500 * MIB)
    assert light.fixed_rate_bytes_s is None
    full = step(state, snap(95, 0), Woke(), SETTINGS_2MIB, NOW + 0.01).state
    assert full.fixed_rate_bytes_s == pytest.approx(500 * MIB)


def test_a_rate_is_known_only_from_readings_close_together() -> None:
    state = sampled(GuardState(), snap(50), NOW, light=False)
    close = sampled(state, snap(60), NOW + 0.01, light=False)  # 10 MiB in 10 ms
    assert close.rate_bytes_s == pytest.approx(1000 * MIB)
    # a long quiet spell, then a burst: the average over the spell is not the rate now
    later = sampled(close, snap(61), NOW + 0.01 + 2 * MAX_SAMPLE_GAP_S, light=False)
    assert later.rate_bytes_s is None
    assert later.fixed_rate_bytes_s is None
    burst = sampled(later, snap(63), NOW + 0.012 + 2 * MAX_SAMPLE_GAP_S, light=True)
    assert burst.rate_bytes_s == pytest.approx(1000 * MIB)


def test_past_the_warning_level_an_unknown_rate_is_measured_at_once() -> None:
    marks = levels(LIMIT, SETTINGS)
    assert marks is not None
    assert marks.warning is not None
    state = armed()
    outcome = step(state, snap(marks.warning / MIB + 0.1), Woke(), SETTINGS, NOW)
    looks = [e for e in outcome.effects if isinstance(e, LookAgain)]
    assert [look.at_s for look in looks] == [pytest.approx(NOW + 0.001)]
    # known and slow: half the time to the threshold (at most a second)
    slow = dataclasses.replace(outcome.state, rate_bytes_s=1 * MIB)
    later_s = NOW + MAX_SAMPLE_GAP_S / 2
    again = step(slow, snap(marks.warning / MIB + 0.1), Woke(), SETTINGS, later_s)
    looks = [e for e in again.effects if isinstance(e, LookAgain)]
    assert looks
    assert looks[0].at_s is not None
    assert looks[0].at_s > later_s + 0.1


def test_a_second_reading_too_late_for_a_rate_does_not_measure_forever() -> None:
    state = armed()
    first = step(state, snap(99, 10), Woke(), SETTINGS, NOW)
    assert first.state.measured
    assert [e.at_s for e in first.effects if isinstance(e, LookAgain)] == [NOW + MEASURE_S]
    # a stalled CPU: the second reading comes after MAX_SAMPLE_GAP_S, the rate unknown
    late = step(first.state, snap(99, 10), Woke(), SETTINGS, NOW + 2 * MAX_SAMPLE_GAP_S)
    assert late.state.fixed_rate_bytes_s is None
    assert any(isinstance(e, Flush) for e in late.effects)
    assert not late.state.measured


def test_a_light_readings_rate_sample_survives_the_full_reading_after_it() -> None:
    before = sampled(GuardState(), snap(50), NOW, light=False)
    light = step(before, snap(60), Woke(light=True), SETTINGS, NOW + 0.01).state
    kept = samples_of(before, light)
    assert kept.rate_bytes_s == pytest.approx(1000 * MIB)
    assert kept.sample_at_s == NOW + 0.01
    assert kept.warned == before.warned  # only the samples are taken over


def test_a_light_reading_never_kills_what_may_be_page_cache() -> None:
    """Usage alone, over the threshold: if what grew since the last full reading
    could be page cache that a flush would drop, the light reading decides no
    kill (the guard reads everything first); anonymous memory already over the
    threshold is killed on usage alone."""
    state = armed()
    full = snap(90, 1)  # the last full reading: 1 MiB of cache
    light = light_snapshot(full, 99 * MIB)  # 9 MiB more since: maybe cache
    assert light.cache_bytes == 10 * MIB
    outcome = step(state, light, Woke(light=True), SETTINGS, NOW)
    assert not [e for e in outcome.effects if isinstance(e, Act)]
    anon = light_snapshot(snap(98.5, 0.2), 99 * MIB)  # over the threshold before
    outcome = step(state, anon, Woke(light=True), SETTINGS, NOW)
    assert [e for e in outcome.effects if isinstance(e, Act)]


def test_a_pressure_request_terminates_with_no_usage_level_and_only_once() -> None:
    """The swap trigger's request: the graceful path whatever --policy says, escalated
    only by the grace period (a swapping container sits at its limit)."""
    settings = dataclasses.replace(SETTINGS, grace_period_s=7.0)
    outcome = step(armed(), snap(50), Pressure("swap trigger: x"), settings, NOW)
    (terminate,) = [e for e in outcome.effects if isinstance(e, Terminate)]
    assert (terminate.reason, terminate.escalate_bytes, terminate.grace_s) == (
        "swap trigger: x",
        None,
        7.0,
    )
    assert terminate.via is settings.graceful_via
    assert terminate.fall_back
    assert outcome.state.terminated_at_s == NOW
    again = step(outcome.state, snap(50), Pressure("swap trigger: y"), settings, NOW + 1)
    assert not [e for e in again.effects if isinstance(e, Terminate | Act)]


def test_a_pressure_request_on_a_protected_pod_is_reported_only() -> None:
    settings = dataclasses.replace(SETTINGS, protected="namespace kube-system is protected")
    outcome = step(armed(), snap(50), Pressure("swap trigger: x"), settings, NOW)
    assert not [e for e in outcome.effects if isinstance(e, Terminate | Act)]
    (report,) = [e for e in outcome.effects if isinstance(e, Publish)]
    assert report.kind is ReportKind.PROTECTED


@pytest.mark.parametrize(
    ("rate_mib_s", "fixed_rate_mib_s", "cache_mib"),
    [
        (None, None, 10),  # rates unknown: all of the growth may be cache
        (1000.0, 1000.0, 1),  # the recent growth was anon: so is this
        (1000.0, 0.0, 10),  # the recent growth was cache: so is this
        (1000.0, 500.0, 5.5),  # half and half (rounding to whole bytes)
        (0.0, 800.0, 1),  # pinned at the limit, anon displacing cache: anon
    ],
)
def test_a_light_reading_attributes_growth_as_the_recent_full_readings_did(
    rate_mib_s: float | None, fixed_rate_mib_s: float | None, cache_mib: float
) -> None:
    state = GuardState(
        rate_bytes_s=None if rate_mib_s is None else rate_mib_s * MIB,
        fixed_rate_bytes_s=None if fixed_rate_mib_s is None else fixed_rate_mib_s * MIB,
    )
    light = light_snapshot(snap(90, 1), 99 * MIB, state)  # 9 MiB grown since the last
    assert light.cache_bytes == pytest.approx(cache_mib * MIB, abs=1)
    assert light.usage_bytes == 99 * MIB


def test_an_anon_hogs_light_reading_kills_without_a_full_read() -> None:
    """The kill path reads usage alone: with the recent full readings saying what
    grows is anon, the light reading over the threshold is enough to act."""
    state = armed(rate_bytes_s=1000.0 * MIB, fixed_rate_bytes_s=1000.0 * MIB)
    light = light_snapshot(snap(90, 0.2), 99 * MIB, state)
    outcome = step(state, light, Woke(light=True), SETTINGS, NOW)
    assert [e for e in outcome.effects if isinstance(e, Act)]


def test_a_kill_the_kernel_raced_says_so() -> None:
    state, effects = effects_of(armed(), snap(99, 0.5), Woke())
    assert isinstance(effects[0], Act)
    raced = dataclasses.replace(snap(4), oom_kill_count=1)
    _, effects = effects_of(state, raced, Acted(victims=1, gone=False, duration_s=0.01))
    oom, report = effects[0], effects[1]
    assert isinstance(oom, Publish)
    assert oom.kind is ReportKind.KERNEL_OOM  # first: the kernel's
    assert isinstance(report, Publish)
    assert report.kind is ReportKind.KILL_CONTAINER
    assert report.oom_kills == 1
    assert "the race was lost or tied" in report.reason


def test_a_graceful_exit_the_kernel_took_is_not_called_graceful() -> None:
    settings = dataclasses.replace(SETTINGS_2MIB, policy=Policy.GRACEFUL)
    marks = levels(LIMIT, settings)
    assert marks is not None
    assert marks.soft is not None
    outcome = step(armed(threshold=THRESHOLD), snap(marks.soft / MIB + 0.1), Woke(), settings, NOW)
    assert [e for e in outcome.effects if isinstance(e, Terminate)]
    raced = dataclasses.replace(snap(4), oom_kill_count=1)
    ended = Terminated(Ending.EXITED, GracefulVia.PROCESS, duration_s=0.034)
    effects = step(outcome.state, raced, ended, settings, NOW + 0.05).effects
    report = next(e for e in effects if isinstance(e, Publish) and e.kind is ReportKind.TERMINATE)
    assert "the kernel's OOM killer killed in it within 0.034s" in report.action
    assert "exited after" not in report.action
    assert report.oom_kills == 1


def test_an_action_that_freed_nothing_keeps_its_cooldown() -> None:
    """noop (or a kill that freed nothing): usage stays over the last-chance level,
    and the cooldown holds - no report storm, no busy loop."""
    settings = dataclasses.replace(SETTINGS_2MIB, policy=Policy.NOOP)
    over = snap(101)  # over the limit (a lowered limit): nothing the kernel can reclaim
    outcome = step(armed(), over, Woke(), settings, NOW)
    assert [e for e in outcome.effects if isinstance(e, Act)]
    outcome = step(outcome.state, over, Acted(0, gone=False, duration_s=0), settings, NOW)
    assert not outcome.state.freed_below_last_chance
    outcome = step(outcome.state, over, Armed(), settings, NOW + 0.01)
    assert outcome.effects == (LookAgain(NOW + settings.cooldown_s),)
