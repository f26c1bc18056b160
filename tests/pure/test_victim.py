"""The process policy: never a protected victim; ranked like the kernel's OOM killer."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.policy.model import MIB, ProcInfo
from memguard.policy.victim import eligible, is_protected, pick_victim, ranked

NONE: frozenset[int] = frozenset()
MEMGUARD_PIDS = frozenset({4242, 4243})


def proc(pid: int, oom_score: int = 500, adj: int = 0, rss_mib: int = 10) -> ProcInfo:
    return ProcInfo(pid, f"p{pid}", oom_score, adj, rss_mib * MIB)


@pytest.mark.parametrize(
    ("candidate", "protected"),
    [
        (proc(1, oom_score=2000), True),
        (proc(4242, oom_score=2000), True),
        (proc(100, adj=-1000), True),
        (proc(100, adj=-1001), True),
        (proc(100, adj=-999), False),
        (proc(100, adj=1000), False),
        (proc(2), False),
    ],
)
def test_is_protected(candidate: ProcInfo, protected: bool) -> None:
    assert is_protected(candidate, MEMGUARD_PIDS) is protected


@pytest.mark.parametrize(
    ("procs", "expected_pid"),
    [
        ([proc(10, oom_score=100), proc(11, oom_score=900), proc(12, oom_score=500)], 11),
        # equal oom_score: the larger RSS
        ([proc(10, rss_mib=50), proc(11, rss_mib=20), proc(12, rss_mib=30)], 10),
        # equal oom_score and RSS: the newer (higher) pid
        ([proc(12), proc(30), proc(11)], 30),
        # oom_score beats RSS
        ([proc(10, oom_score=600, rss_mib=1), proc(11, oom_score=599, rss_mib=900)], 10),
        # protected ones are skipped even when they rank first
        ([proc(1, oom_score=1000), proc(4242, oom_score=999), proc(7, oom_score=1)], 7),
        ([proc(8, oom_score=1000, adj=-1000), proc(9, oom_score=3)], 9),
        ([proc(5)], 5),
    ],
)
def test_pick_victim_ranking(procs: list[ProcInfo], expected_pid: int) -> None:
    victim = pick_victim(procs, MEMGUARD_PIDS)
    assert victim is not None
    assert victim.pid == expected_pid
    assert ranked(procs, MEMGUARD_PIDS)[0] == victim


@pytest.mark.parametrize(
    "procs",
    [
        [],
        [proc(1)],
        [proc(4242), proc(4243)],
        [proc(1), proc(4242), proc(77, adj=-1000)],
    ],
)
def test_no_victim_when_none_may_be_killed(procs: list[ProcInfo]) -> None:
    assert pick_victim(procs, MEMGUARD_PIDS) is None
    assert ranked(procs, MEMGUARD_PIDS) == []


def test_ranked_orders_by_score_then_rss_then_pid() -> None:
    procs = [
        proc(3, oom_score=10, rss_mib=5),
        proc(4, oom_score=10, rss_mib=5),
        proc(5, oom_score=10, rss_mib=6),
        proc(6, oom_score=20, rss_mib=1),
        proc(1, oom_score=30),
    ]
    assert [p.pid for p in ranked(procs, NONE)] == [6, 5, 4, 3]


def test_pick_victim_accepts_any_iterable() -> None:
    victim = pick_victim(iter([proc(10), proc(11, oom_score=600)]), NONE)
    assert victim is not None
    assert victim.pid == 11


procs_st = st.builds(
    ProcInfo,
    pid=st.integers(min_value=1, max_value=60),
    comm=st.text(max_size=15),
    oom_score=st.integers(min_value=0, max_value=2000),
    oom_score_adj=st.sampled_from([-1000, -999, -500, 0, 500, 1000]) | st.integers(-1000, 1000),
    rss_bytes=st.integers(min_value=0, max_value=2**40),
)
protected_st = st.frozensets(st.integers(min_value=1, max_value=60), max_size=10)


def _protected(p: ProcInfo, protected_pids: frozenset[int]) -> bool:
    return p.pid == 1 or p.pid in protected_pids or p.oom_score_adj == -1000


@given(procs=st.lists(procs_st, max_size=30), protected_pids=protected_st)
def test_never_a_protected_victim(procs: list[ProcInfo], protected_pids: frozenset[int]) -> None:
    victim = pick_victim(procs, protected_pids)
    allowed = [p for p in procs if not _protected(p, protected_pids)]
    if victim is None:
        assert allowed == []
    else:
        assert not _protected(victim, protected_pids)
        assert victim in allowed
        best = max((p.oom_score, p.rss_bytes, p.pid) for p in allowed)
        assert (victim.oom_score, victim.rss_bytes, victim.pid) == best


@given(procs=st.lists(procs_st, max_size=30), protected_pids=protected_st)
def test_ranked_is_the_eligible_set_best_first(
    procs: list[ProcInfo], protected_pids: frozenset[int]
) -> None:
    order = ranked(procs, protected_pids)
    assert not any(_protected(p, protected_pids) for p in order)
    allowed = [p for p in procs if not _protected(p, protected_pids)]
    assert Counter(order) == Counter(allowed)
    assert Counter(eligible(procs, protected_pids)) == Counter(allowed)
    keys = [(p.oom_score, p.rss_bytes, p.pid) for p in order]
    assert keys == sorted(keys, reverse=True)
