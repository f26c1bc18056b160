"""The decision table: idle, cooldown, flush, skip, act; skip reports; OOM kill counts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.decide import (
    GuardState,
    Step,
    after_action,
    after_flush,
    after_skip_report,
    decide,
    new_oom_kills,
    should_report_skip,
)
from memguard.policy.margin import threshold_bytes
from memguard.policy.model import MIB, GuardSettings, MemorySnapshot

SETTINGS = GuardSettings(
    max_cache_ratio=0.5, flush_cooldown_s=10.0, cooldown_s=5.0, hot_recheck_interval_s=0.25
)
LIMIT = 100 * MIB
THRESHOLD = 98 * MIB
NOW = 1000.0
HOT = NOW + 0.25
FRESH = GuardState()
FLUSHED_5S_AGO = GuardState(last_flush_at_s=NOW - 5.0)


def snap(usage_mib: float, cache_mib: float = 0, shmem_mib: float = 0) -> MemorySnapshot:
    return MemorySnapshot(
        usage_bytes=int(usage_mib * MIB),
        limit_bytes=LIMIT,
        cache_bytes=int(cache_mib * MIB),
        shmem_bytes=int(shmem_mib * MIB),
    )


IN_COOLDOWN = GuardState(cooldown_until_s=NOW + 3)
COOLDOWN_ENDS_NOW = GuardState(cooldown_until_s=NOW)
FLUSHED_10S_AGO = GuardState(last_flush_at_s=NOW - 10.0)

# (id, snapshot, state, step, retry_at_s); the threshold is 98 MiB of a 100 MiB limit.
DECISIONS = [
    ("below-threshold", snap(97.9), FRESH, Step.IDLE, None),
    ("below-threshold-beats-cooldown", snap(97.9), IN_COOLDOWN, Step.IDLE, None),
    ("at-threshold-flushes", snap(98, 10), FRESH, Step.FLUSH, HOT),
    ("cooldown-until-its-end", snap(99, 10), IN_COOLDOWN, Step.COOLDOWN, NOW + 3),
    ("cooldown-over-exactly-at-its-end", snap(99, 0.5), COOLDOWN_ENDS_NOW, Step.ACT, HOT),
    ("flush-could-help", snap(99, 10), FRESH, Step.FLUSH, HOT),
    ("flush-could-just-help", snap(99, 1.5), FRESH, Step.FLUSH, HOT),
    ("flush-lands-exactly-on-threshold", snap(99, 1), FRESH, Step.ACT, HOT),
    ("flush-cannot-help", snap(99, 0.5), FRESH, Step.ACT, HOT),
    ("shmem-is-not-flushable", snap(99, 20, shmem_mib=20), FRESH, Step.ACT, HOT),
    ("flush-in-cooldown-cache-heavy", snap(99, 60), FLUSHED_5S_AGO, Step.SKIP, HOT),
    ("flush-in-cooldown-shmem-heavy", snap(99, 60, 60), FLUSHED_5S_AGO, Step.ACT, HOT),
    ("flush-in-cooldown-anon", snap(99, 40), FLUSHED_5S_AGO, Step.ACT, HOT),
    ("cache-ratio-at-max-is-not-skipped", snap(100, 50), FLUSHED_5S_AGO, Step.ACT, HOT),
    ("flush-cooldown-over", snap(99, 60), FLUSHED_10S_AGO, Step.FLUSH, HOT),
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


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (FRESH, "too little page cache"),
        (FLUSHED_5S_AGO, "still over threshold 5.0s after a flush"),
    ],
)
def test_act_reason_says_why(state: GuardState, reason: str) -> None:
    decision = decide(snap(99, 0.5), THRESHOLD, state, SETTINGS, NOW)
    assert decision.step is Step.ACT
    assert reason in decision.reason


def test_reclaimable_cache_excludes_shmem_and_never_goes_negative() -> None:
    assert snap(99, 30, shmem_mib=10).reclaimable_cache_bytes == 20 * MIB
    assert snap(99, 10, shmem_mib=30).reclaimable_cache_bytes == 0


def test_after_action_starts_a_cooldown() -> None:
    state = after_action(FRESH, SETTINGS, NOW)
    assert state.cooldown_until_s == NOW + SETTINGS.cooldown_s
    assert decide(snap(99, 10), THRESHOLD, state, SETTINGS, NOW + 1).step is Step.COOLDOWN


@pytest.mark.parametrize(
    ("reported_at_s", "now_s", "expected"),
    [(None, NOW, True), (NOW, NOW, False), (NOW, NOW + 4.9, False), (NOW, NOW + 5.0, True)],
)
def test_should_report_skip_once_per_cooldown(
    reported_at_s: float | None, now_s: float, expected: bool
) -> None:
    state = GuardState(skip_reported_at_s=reported_at_s)
    assert should_report_skip(state, SETTINGS, now_s) is expected


def test_after_skip_report_rate_limits_the_next_report() -> None:
    state = after_skip_report(FRESH, NOW)
    assert not should_report_skip(state, SETTINGS, NOW + 1)
    assert should_report_skip(state, SETTINGS, NOW + SETTINGS.cooldown_s)


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


@given(
    settings=settings_st,
    wakeups=st.lists(
        st.tuples(st.floats(min_value=0, max_value=30), snapshots(THRESHOLD - MIB)), max_size=40
    ),
)
def test_never_flushes_twice_within_flush_cooldown(
    settings: GuardSettings, wakeups: list[tuple[float, MemorySnapshot]]
) -> None:
    state, now_s, flushes = FRESH, NOW, []
    for delay_s, snapshot in wakeups:
        now_s += delay_s
        decision = decide(snapshot, THRESHOLD, state, settings, now_s)
        in_cooldown = state.cooldown_until_s is not None and now_s < state.cooldown_until_s
        assert decision.step is not Step.ACT or not in_cooldown
        if decision.step is Step.FLUSH:
            flushes.append(now_s)
            state = after_flush(state, now_s)
        elif decision.step is Step.ACT:
            state = after_action(state, settings, now_s)
    for earlier, later in itertools.pairwise(flushes):
        assert later - earlier >= settings.flush_cooldown_s
