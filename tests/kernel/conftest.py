"""Real-kernel tier: root and the cgroup v1 memory controller, or a loud failure.

CI runs as root on a cgroup v1 host, so a missing prerequisite fails the run
instead of skipping. MEMGUARD_SKIP_KERNEL_TESTS=1 skips this tier explicitly
(for a developer machine without root); CI must never set it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from memguard.kernel.fstype import FsKind, fs_kind
from tests.kernel.cgroups import V1_MEMORY_ROOT, CgroupTree, new_tree


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if fs_kind(V1_MEMORY_ROOT) is not FsKind.CGROUP_V1:
        return f"{V1_MEMORY_ROOT} is not a cgroup v1 mount"
    if not os.path.exists(os.path.join(V1_MEMORY_ROOT, "cgroup.event_control")):
        return f"{V1_MEMORY_ROOT} has no cgroup.event_control (not the memory controller)"
    return None


@pytest.fixture
def cgroups() -> Iterator[CgroupTree]:
    missing = _missing_prerequisite()
    if missing is not None:
        if os.environ.get("MEMGUARD_SKIP_KERNEL_TESTS") == "1":
            pytest.skip(f"real-kernel tier skipped on request: {missing}")
        pytest.fail(f"real-kernel tier needs root and cgroup v1 memory: {missing}")
    tree = new_tree()
    try:
        yield tree
    finally:
        tree.cleanup()
