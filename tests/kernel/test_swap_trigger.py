"""The swap trigger against a real kernel's swap (cgroup v2 VM tier only).

Swap on zram (RAM-backed; never on the host: the host has none and this test
is not collected there). Two containers: one thrashes - memory.max far below
what its process touches again and again, memory.swap.max unlimited - the
other idles. With a low --swap-io-threshold and a short --sustained-duration,
the trigger must choose the thrashing one (it alone uses swap and stalls on
memory) and act on it, and leave the idle one alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import trio

from memguard.kernel.swapfiles import read_swaps
from memguard.policy.model import MIB, Policy
from memguard.policy.swap import SwapSettings
from memguard.reports.report import ReportKind
from testing.agents import make_config, running_agent, wait_armed
from testing.cgroups import CgroupTree
from testing.waits import WAIT_S, bounded

pytestmark = [pytest.mark.kernel, pytest.mark.cgroup_v2_only]

ZRAM_SIZE = "256M"
# Touches every page of 96 MiB over and over: with memory.max at 32 MiB, most of
# it lives in swap and every pass swaps it in and out.
THRASH = """
size = 96 << 20
block = bytearray(size)
while True:
    for offset in range(0, size, 4096):
        block[offset] = (block[offset] + 1) & 255
"""
SETTINGS = SwapSettings(
    io_threshold_pages_s=200, sustained_s=2.0, poll_interval_s=0.25, cooldown_s=300
)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture
def zram_swap() -> Iterator[str]:
    """256 MiB of swap on /dev/zram0 for the test; off and gone after it."""
    _run("modprobe", "zram", "num_devices=1")
    with open("/sys/block/zram0/disksize", "w") as file:
        file.write(ZRAM_SIZE)
    _run("mkswap", "/dev/zram0")
    _run("swapon", "/dev/zram0")
    try:
        yield "/dev/zram0"
    finally:
        _run("swapoff", "/dev/zram0")
        with open("/sys/block/zram0/reset", "w") as file:
            file.write("1")


async def test_the_trigger_acts_on_the_thrashing_container(
    cgroups: CgroupTree, zram_swap: str
) -> None:
    assert [area.filename for area in read_swaps()] == [zram_swap]
    thrashing = cgroups.container(32 * MIB, index=0)
    idle = cgroups.container(64 * MIB, index=1)
    for cgroup in (thrashing, idle):
        assert cgroups.read(cgroup, "memory.swap.max") == "max"
    sleeper = cgroups.spawn(idle, ["sleep", "3600"])
    sleeper.go()
    thrasher = cgroups.spawn(thrashing, [sys.executable, "-c", THRASH], name="the thrasher")
    # The guards report only (noop): a container swapping under memory.max sits at
    # its limit, and the container policy would kill it before the trigger fires.
    config = make_config(cgroups.parent, swap=SETTINGS, policy=Policy.NOOP)
    async with running_agent(config) as (agent, collect):
        await wait_armed(agent, thrashing)
        await wait_armed(agent, idle)
        thrasher.go()
        started_s = time.time()
        report = await bounded(
            collect.wait_for(lambda r: r.cgroup == thrashing and "swap trigger:" in r.reason),
            "the swap trigger acting on the thrashing container",
        )
        acted_s = report.wall_time_s
        # Acted on gracefully: its process dies of the SIGTERM (a bounded wait:
        # TimeoutExpired fails the test).
        returncode = await trio.to_thread.run_sync(thrasher.process.wait, WAIT_S)
        assert returncode == -signal.SIGTERM, returncode
        assert report.kind is ReportKind.TERMINATE, report
        assert not any(r.cgroup == idle for r in collect.reports), "the idle one was acted on"
    assert sleeper.process.poll() is None, "the idle container's process was signalled"
    sleeper.process.kill()  # ours: reaped here, not left to Popen.__del__ (a warning)
    sleeper.process.wait(WAIT_S)
    assert "ranked by PSI full avg10" in report.reason  # v2: per-cgroup PSI ranks
    assert " swap share" in report.reason
    print(f"\nswap trigger: thrasher started -> acted on in {acted_s - started_s:.2f}s "
          f"(sustained {SETTINGS.sustained_s:g}s at > {SETTINGS.io_threshold_pages_s:g} pages/s); "
          f"{report.reason}")  # fmt: skip
