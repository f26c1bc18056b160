"""--high-tripwire auto (the default) against the real kernel's memory.high.

cgroup v2 (the VM tier): memory.high becomes the threshold, in whole pages as
the kernel keeps it, where it read "max"; a value someone else set (the
kubelet's MemoryQoS) is left alone; "max" comes back when memguard stops. The
race it wins is tests/test_real_kernel.py's kill tests (memguard's defaults).
cgroup v1 has no memory.high: nothing is written.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from memguard.policy.margin import threshold_bytes
from memguard.policy.model import MIB
from testing.agents import make_config, make_settings, running_agent, wait_armed
from testing.cgroups import TEST_CGROUP_VERSION, CgroupTree

pytestmark = pytest.mark.kernel
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
KUBELET_HIGH_BYTES = 100 * MIB  # what the kubelet's MemoryQoS would have written


def _set_high(cgroup: str, high_bytes: int) -> None:
    pathlib.Path(cgroup, "memory.high").write_text(str(high_bytes))


async def test_the_default_tripwire_takes_only_a_free_memory_high(cgroups: CgroupTree) -> None:
    free = cgroups.container(128 * MIB)
    owned = cgroups.container(128 * MIB)
    if TEST_CGROUP_VERSION == 2:
        _set_high(owned, KUBELET_HIGH_BYTES)
    threshold = threshold_bytes(128 * MIB, make_settings())
    assert threshold is not None
    async with running_agent(make_config(cgroups.parent)) as (agent, _):
        await wait_armed(agent, free)
        await wait_armed(agent, owned)
        if TEST_CGROUP_VERSION == 2:
            assert cgroups.read(free, "memory.high") == str(threshold - threshold % PAGE_BYTES)
            assert cgroups.read(owned, "memory.high") == str(KUBELET_HIGH_BYTES)
        else:
            assert "memory.high" not in cgroups.files(free)
    if TEST_CGROUP_VERSION == 2:
        assert cgroups.read(free, "memory.high") == "max"  # given back
        assert cgroups.read(owned, "memory.high") == str(KUBELET_HIGH_BYTES)
