"""The periodic page-cache flusher's rule (pure) and its flag."""

from __future__ import annotations

import pytest

from memguard.cli.options import RUN_OPTIONS, resolve
from memguard.errors import ConfigError
from memguard.policy.cacheflush import CacheStep, after_cache_flush, decide_cache_flush
from memguard.policy.model import CacheLimit, GuardSettings, MemorySnapshot
from memguard.policy.state import GuardState
from memguard.policy.table import Step, decide

MIB = 1 << 20
QUARTER = CacheLimit(ratio=0.25)
SETTINGS = GuardSettings(flush_cooldown_s=30.0)


def snap(cache_mib: int, limit_mib: int | None = 1024, shmem_mib: int = 0) -> MemorySnapshot:
    limit = None if limit_mib is None else limit_mib * MIB
    return MemorySnapshot(
        (cache_mib + 10) * MIB, limit, cache_bytes=cache_mib * MIB, shmem_bytes=shmem_mib * MIB
    )


@pytest.mark.parametrize(
    ("snapshot", "limit", "state", "step", "request_mib"),
    [
        (snap(300), CacheLimit(ratio=0.25), GuardState(), CacheStep.FLUSH, 300 - 256),
        (snap(200), CacheLimit(ratio=0.25), GuardState(), CacheStep.NONE, 0),
        (snap(300, shmem_mib=100), CacheLimit(ratio=0.25), GuardState(), CacheStep.NONE, 0),
        (snap(300), CacheLimit(size_bytes=100 * MIB), GuardState(), CacheStep.FLUSH, 200),
        (snap(300, None), CacheLimit(size_bytes=100 * MIB), GuardState(), CacheStep.FLUSH, 200),
        (snap(300, None), CacheLimit(ratio=0.25), GuardState(), CacheStep.UNLIMITED, 0),
        (snap(300), CacheLimit(ratio=0.25), GuardState(last_flush_at_s=990.0), CacheStep.NONE, 0),
        (snap(300), CacheLimit(ratio=0.25), GuardState(last_flush_at_s=960.0), CacheStep.FLUSH, 44),
        (
            snap(300),
            CacheLimit(ratio=0.25),
            GuardState(last_cache_flush_at_s=995.0),
            CacheStep.NONE,
            0,
        ),
        (
            snap(300),
            CacheLimit(ratio=0.25),
            GuardState(last_cache_flush_at_s=960.0),
            CacheStep.FLUSH,
            44,
        ),
        (snap(300), None, GuardState(), CacheStep.NONE, 0),
    ],
)
def test_decide_cache_flush(
    snapshot: MemorySnapshot,
    limit: CacheLimit | None,
    state: GuardState,
    step: CacheStep,
    request_mib: int,
) -> None:
    decision = decide_cache_flush(snapshot, limit, state, SETTINGS, now_s=1000.0)
    assert decision.step is step
    assert decision.request_bytes == request_mib * MIB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25%", CacheLimit(ratio=0.25)),
        ("512Mi", CacheLimit(size_bytes=512 * MIB)),
        ("1G", CacheLimit(size_bytes=10**9)),
        ("1048576", CacheLimit(size_bytes=MIB)),
        ("", None),
    ],
)
def test_flush_cache_above_values(text: str, expected: CacheLimit | None) -> None:
    assert resolve(RUN_OPTIONS, {"flush_cache_above": text}, {})["flush_cache_above"] == expected


@pytest.mark.parametrize("bad", ["abc", "0%", "120%", "1m"])
def test_bad_flush_cache_above(bad: str) -> None:
    with pytest.raises(ConfigError, match="--flush-cache-above"):
        resolve(RUN_OPTIONS, {"flush_cache_above": bad}, {})


def test_a_routine_cache_flush_does_not_hold_back_the_oom_paths_flush() -> None:
    state = after_cache_flush(GuardState(fixed_rate_bytes_s=0.0), 1000.0)  # steady
    over = MemorySnapshot(usage_bytes=1020 * MIB, limit_bytes=1024 * MIB, cache_bytes=600 * MIB)
    threshold = 1000 * MIB
    assert decide(over, threshold, state, SETTINGS, now_s=1001.0).step is Step.FLUSH
    # ... while the flusher itself waits its cooldown
    assert decide_cache_flush(over, CacheLimit(ratio=0.25), state, SETTINGS, 1001.0).step is (
        CacheStep.NONE
    )
