"""Host cgroup mode from mountinfo, and the v2 adaptive poll schedule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.kernel.mounts import CgroupMounts, HostMode, host_mode, parse_mountinfo
from memguard.policy.poll import PollSettings, PollState, next_interval_s, observe

MIB = 1 << 20
# Lines as this host (hybrid) and a v2-only host print them.
V1_LINE = "34 25 0:29 / /sys/fs/cgroup/memory rw,relatime shared:13 - cgroup cgroup rw,memory"
CPU_LINE = "30 25 0:25 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu"
UNIFIED_LINE = (
    "28 25 0:23 / /sys/fs/cgroup/unified rw,relatime shared:7 - cgroup2 cgroup2 rw,nsdelegate"
)
V2_LINE = (
    "26 23 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 "
    "cgroup2 rw,nsdelegate,memory_recursiveprot"
)
EXT4_LINE = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw"


@pytest.mark.parametrize(
    ("lines", "controllers", "mode", "mounts"),
    [
        ([EXT4_LINE, CPU_LINE, V1_LINE], None, HostMode.V1,
         CgroupMounts("/sys/fs/cgroup/memory", None)),
        ([EXT4_LINE, UNIFIED_LINE, V1_LINE], "", HostMode.HYBRID,
         CgroupMounts("/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified")),
        ([EXT4_LINE, V2_LINE], "cpuset cpu io memory pids", HostMode.V2,
         CgroupMounts(None, "/sys/fs/cgroup")),
        ([EXT4_LINE, V2_LINE], "cpu io pids", HostMode.NONE, CgroupMounts(None, "/sys/fs/cgroup")),
        ([EXT4_LINE, "garbage", "1 2 3 - x"], None, HostMode.NONE, CgroupMounts()),
    ],
)  # fmt: skip
def test_host_mode(
    lines: list[str], controllers: str | None, mode: HostMode, mounts: CgroupMounts
) -> None:
    parsed = parse_mountinfo("\n".join(lines))
    assert parsed == mounts
    assert host_mode(parsed, controllers) is mode


SETTINGS = PollSettings(min_interval_s=0.01, max_interval_s=1.0, assumed_min_rate_bytes_s=16 * MIB)


def test_poll_interval_shrinks_as_headroom_shrinks() -> None:
    state = observe(PollState(), 100 * MIB, 0.0)
    far = next_interval_s(state, 200 * MIB, SETTINGS)
    state = observe(state, 180 * MIB, 1.0)  # 80 MiB/s
    near = next_interval_s(state, 200 * MIB, SETTINGS)
    assert far == pytest.approx(1.0)  # 100 MiB / 16 MiB/s / 2 > max
    assert near == pytest.approx(0.5 * 20 * MIB / (40 * MIB))  # EWMA: half of 80 MiB/s
    over = observe(state, 201 * MIB, 1.1)
    assert next_interval_s(over, 200 * MIB, SETTINGS) == SETTINGS.min_interval_s
    assert next_interval_s(state, None, SETTINGS) == SETTINGS.max_interval_s


@given(
    usage=st.integers(0, 1 << 40), threshold=st.integers(1, 1 << 40),
    rate=st.floats(0, 1e12, allow_nan=False),
)  # fmt: skip
def test_poll_interval_stays_in_bounds(usage: int, threshold: int, rate: float) -> None:
    state = PollState(usage, 0.0, rate)
    interval = next_interval_s(state, threshold, SETTINGS)
    assert SETTINGS.min_interval_s <= interval <= SETTINGS.max_interval_s


def test_shrinking_usage_never_makes_a_negative_rate() -> None:
    state = observe(observe(PollState(), 100 * MIB, 0.0), 50 * MIB, 1.0)
    assert state.rate_bytes_s == 0.0
