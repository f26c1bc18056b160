"""The swap trigger's pure core: recorded /proc/vmstat sequences and victim tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.overrides import ContainerOverrides
from memguard.policy.swap import (
    RankedBy,
    SwapCandidate,
    SwapSettings,
    SwapState,
    Verdict,
    VmstatSample,
    choose_victim,
    observe,
    quiet_until,
)

MIB = 2**20
SETTINGS = SwapSettings(io_threshold_pages_s=1000, sustained_s=10, poll_interval_s=1, cooldown_s=30)

# (seconds, pswpin, pswpout) as the service reads them every second. The steady
# part is shaped like what the v2 VM records while a container thrashes on zram:
# ~2,000-6,000 pages/s both ways.
THRASHING = [(float(t), 1000 + 2500 * t, 3000 + 2600 * t) for t in range(13)]
QUIET = [(float(t), 50 + t, 70 + 2 * t) for t in range(13)]
SPIKE = [(0.0, 0, 0), (1.0, 0, 0), *[(float(t), 9000, 9000) for t in range(2, 15)]]
# High for 6 s, one calm second (6 s -> 7 s), high again: fires 10 s after the calm second.
DIP = [(float(t), 3000 * min(t, 6) + 10 * (t >= 7) + 3000 * max(t - 7, 0), 0) for t in range(19)]
# The counters go back to small numbers mid-way (a new boot's vmstat, a wrap).
RESET = [(float(t), 5000 * t, 0) for t in range(8)] + [
    (float(t), 5000 * (t - 8), 0) for t in range(8, 20)
]
# No sample between 4 s and 9 s (reads failed, or the agent stalled).
GAP = [(float(t), 5000 * t, 0) for t in (*range(5), *range(9, 21))]


def run(sequence: list[tuple[float, int, int]], settings: SwapSettings = SETTINGS) -> list[Verdict]:
    state = SwapState()
    verdicts = []
    for at_s, pswpin, pswpout in sequence:
        observation = observe(state, VmstatSample(at_s, pswpin, pswpout), settings)
        state = observation.state
        verdicts.append(observation.verdict)
    return verdicts


def first_fire(sequence: list[tuple[float, int, int]]) -> float | None:
    for (at_s, _, _), verdict in zip(sequence, run(sequence), strict=True):
        if verdict is Verdict.SUSTAINED:
            return at_s
    return None


@pytest.mark.parametrize(
    ("name", "sequence", "fires_at_s"),
    [
        ("sustained thrashing", THRASHING, 10.0),
        ("quiet node", QUIET, None),
        ("one spike", SPIKE, None),
        ("a calm second restarts the window", DIP, 17.0),
        ("counter reset restarts the window", RESET, 18.0),
        ("a gap restarts the window", GAP, 19.0),
    ],
)
def test_recorded_sequences(
    name: str, sequence: list[tuple[float, int, int]], fires_at_s: float | None
) -> None:
    assert first_fire(sequence) == fires_at_s, name


def test_reset_and_gap_are_said_and_give_no_rate() -> None:
    assert run(RESET)[8] is Verdict.RESET
    assert run(GAP)[5] is Verdict.GAP
    state = observe(SwapState(), VmstatSample(0, 100, 100), SETTINGS).state
    wrapped = observe(state, VmstatSample(1, 5, 100), SETTINGS)
    assert wrapped.verdict is Verdict.RESET
    assert wrapped.rate_pages_s is None


def test_time_going_backwards_is_a_reset_not_a_division() -> None:
    state = observe(SwapState(), VmstatSample(5, 0, 0), SETTINGS).state
    assert observe(state, VmstatSample(5, 9000, 0), SETTINGS).verdict is Verdict.RESET
    assert observe(state, VmstatSample(4, 9000, 0), SETTINGS).verdict is Verdict.RESET


def test_rate_is_pages_per_second_of_both_counters() -> None:
    state = observe(SwapState(), VmstatSample(0, 100, 200), SETTINGS).state
    observation = observe(state, VmstatSample(0.5, 400, 500), SETTINGS)
    assert observation.rate_pages_s == pytest.approx(1200.0)
    assert observation.verdict is Verdict.RISING
    assert observation.above_for_s == pytest.approx(0.5)


def test_exactly_the_threshold_is_calm() -> None:
    state = observe(SwapState(), VmstatSample(0, 0, 0), SETTINGS).state
    assert observe(state, VmstatSample(1, 500, 500), SETTINGS).verdict is Verdict.CALM


def test_cooldown_then_a_whole_new_window() -> None:
    state = SwapState()
    verdicts = []
    for at_s, pswpin, pswpout in [(float(t), 4000 * t, 0) for t in range(60)]:
        observation = observe(state, VmstatSample(at_s, pswpin, pswpout), SETTINGS)
        state = observation.state
        verdicts.append((at_s, observation.verdict))
        if observation.verdict is Verdict.SUSTAINED:
            state = quiet_until(state, at_s + SETTINGS.cooldown_s)
    fired = [at_s for at_s, verdict in verdicts if verdict is Verdict.SUSTAINED]
    # 10 s to fire, 30 s quiet, then 10 s again from the cooldown's end.
    assert fired == [10.0, 50.0]
    assert all(v is Verdict.COOLDOWN for at_s, v in verdicts if 10 < at_s < 40)


@given(
    st.lists(
        st.tuples(st.floats(0.05, 5.0), st.integers(-10_000, 20_000), st.integers(-10_000, 20_000)),
        max_size=60,
    )
)
def test_never_fires_before_sustained_high_intervals(
    steps: list[tuple[float, int, int]],
) -> None:
    """Whatever the samples, a fire means the last sustained_s were all high intervals."""
    state, at_s, pswpin, pswpout = SwapState(), 0.0, 10**6, 10**6
    history: list[tuple[float, float | None]] = []  # (end of interval, its rate)
    for dt, din, dout in steps:
        at_s, pswpin, pswpout = at_s + dt, pswpin + din, pswpout + dout
        observation = observe(state, VmstatSample(at_s, pswpin, pswpout), SETTINGS)
        state = observation.state
        history.append((at_s, observation.rate_pages_s))
        if observation.verdict is Verdict.SUSTAINED:
            start_s = at_s - observation.above_for_s
            assert observation.above_for_s >= SETTINGS.sustained_s
            window = [r for end_s, r in history if end_s > start_s]
            assert all(r is not None and r > SETTINGS.io_threshold_pages_s for r in window)


# -- the victim ----------------------------------------------------------------------


def c(
    name: str,
    swap_mib: float,
    usage_mib: float = 100,
    psi: float | None = None,
    protected: str | None = None,
    terminating: bool = False,
    ignore: bool = False,
) -> SwapCandidate:
    overrides = ContainerOverrides(protected=protected, terminating=terminating, ignore=ignore)
    return SwapCandidate(name, int(swap_mib * MIB), int(usage_mib * MIB), psi, overrides)


@pytest.mark.parametrize(
    ("candidates", "victim", "ranked_by"),
    [
        ([], None, RankedBy.SWAP_SHARE),
        ([c("a", 0, psi=90.0), c("b", 0, psi=10.0)], None, RankedBy.SWAP_SHARE),
        # v2: the highest PSI full avg10 among those using swap.
        ([c("a", 10, psi=5.0), c("b", 1, psi=40.0), c("c", 0, psi=99.0)], "b", RankedBy.PSI),
        # PSI ties go to more swap bytes.
        ([c("a", 10, psi=12.5), c("b", 30, psi=12.5), c("c", 20, psi=12.5)], "b", RankedBy.PSI),
        # v1 (no per-cgroup PSI): the highest swap share, not the most swap.
        ([c("a", 100, usage_mib=900), c("b", 50, usage_mib=50)], "b", RankedBy.SWAP_SHARE),
        # share ties go to more swap bytes.
        ([c("a", 10, usage_mib=10), c("b", 40, usage_mib=40)], "b", RankedBy.SWAP_SHARE),
        # one without PSI among PSI ones: PSI cannot rank them all, the share does.
        ([c("a", 50, 50, psi=1.0), c("b", 10, 90, psi=None)], "a", RankedBy.SWAP_SHARE),
        # protected, terminating and ignored ones are passed over, however bad.
        (
            [
                c("sys", 90, psi=80.0, protected="namespace kube-system"),
                c("dying", 90, psi=70.0, terminating=True),
                c("quiet", 90, psi=60.0, ignore=True),
                c("app", 1, psi=0.5),
            ],
            "app",
            RankedBy.PSI,
        ),
        ([c("sys", 90, psi=80.0, protected="critical priority")], None, RankedBy.SWAP_SHARE),
    ],
)
def test_victim_table(
    candidates: list[SwapCandidate], victim: str | None, ranked_by: RankedBy
) -> None:
    choice = choose_victim(candidates)
    assert (choice.victim.cgroup_dir if choice.victim else None) == victim
    assert choice.ranked_by is ranked_by


def test_skipped_ones_say_why() -> None:
    choice = choose_victim(
        [
            c("sys", 90, protected="namespace kube-system"),
            c("dying", 90, terminating=True),
            c("idle", 0, protected="namespace kube-system"),
            c("app", 1),
        ]
    )
    assert choice.using_swap == 3
    assert dict(choice.skipped) == {
        "sys": "protected (namespace kube-system)",
        "dying": "its pod is terminating already",
    }


def test_swap_share_of_an_empty_container_is_zero() -> None:
    assert SwapCandidate("x", 0, 0).swap_share == 0.0
    assert SwapCandidate("x", MIB, 3 * MIB).swap_share == 0.25


@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.integers(0, 4),
            st.one_of(st.none(), st.floats(0, 100)),
            st.booleans(),
            st.booleans(),
        ),
        max_size=8,
    )
)
def test_never_a_protected_terminating_or_idle_victim(
    rows: list[tuple[int, int, float | None, bool, bool]],
) -> None:
    candidates = [
        c(f"c{i}", swap, usage, psi, "p" if protected else None, terminating)
        for i, (swap, usage, psi, protected, terminating) in enumerate(rows)
    ]
    victim = choose_victim(candidates).victim
    if victim is not None:
        assert victim.swap_bytes > 0
        assert victim.overrides.protected is None
        assert not victim.overrides.terminating
    else:
        assert not any(
            x.swap_bytes > 0 and x.overrides.protected is None and not x.overrides.terminating
            for x in candidates
        )
