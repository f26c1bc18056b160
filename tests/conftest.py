"""Fixtures shared by every tier.

The real-kernel fixture (`cgroups`) needs root and the cgroup v1 memory
controller; CI runs as root on a cgroup v1 host, so a missing prerequisite
fails the test instead of skipping. MEMGUARD_SKIP_KERNEL_TESTS=1 skips
explicitly (a developer machine without root); CI must never set it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from memguard.fake import model, tree
from memguard.fake.tree import kill_and_reap
from memguard.kernel.fstype import FsKind, fs_kind
from testing.cgroups import (
    TEST_CGROUP_VERSION,
    V1_MEMORY_ROOT,
    V2_ROOT,
    CgroupTree,
    new_tree,
)


@pytest.fixture
def fake_tree(tmp_path: os.PathLike[str]) -> Iterator[tuple[str, list[tree.FakeContainer]]]:
    """The `memguard fake init` tree with its real sleeping processes."""
    root = os.path.join(tmp_path, "tree")
    containers = tree.build(root)
    try:
        yield root, containers
    finally:
        kill_and_reap(pid for c in containers for pid in c.pids)


@pytest.fixture
def fake_v2_tree(tmp_path: os.PathLike[str]) -> Iterator[tuple[str, list[tree.FakeContainer]]]:
    """The init tree imitating cgroup v2."""
    root = os.path.join(tmp_path, "tree")
    containers = tree.build(root, cgroup_version=2)
    try:
        yield root, containers
    finally:
        kill_and_reap(pid for c in containers for pid in c.pids)


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def any_fake_tree(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> Iterator[tuple[str, list[tree.FakeContainer]]]:
    """The init tree imitating cgroup v1, then v2 (both kubelet drivers in each)."""
    root = os.path.join(tmp_path, "tree")
    containers = tree.build(root, cgroup_version=request.param)
    try:
        yield root, containers
    finally:
        kill_and_reap(pid for c in containers for pid in c.pids)


@pytest.fixture
def empty_fake_root(tmp_path: os.PathLike[str]) -> str:
    """A fake tree root (marker only) for tests that make their own cgroups."""
    root = os.path.join(tmp_path, "tree")
    model.make_root(root)
    return root


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if TEST_CGROUP_VERSION == 2:
        if fs_kind(V2_ROOT) is not FsKind.CGROUP_V2:
            return f"{V2_ROOT} is not a cgroup v2 mount"
        with open(os.path.join(V2_ROOT, "cgroup.controllers")) as file:
            if "memory" not in file.read().split():
                return "cgroup v2 without the memory controller"
        return None
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
        pytest.fail(f"real-kernel tier needs root and the memory controller: {missing}")
    tree = new_tree(TEST_CGROUP_VERSION)
    try:
        yield tree
    finally:
        tree.cleanup()


@pytest.fixture
def page_cache_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A directory on a filesystem with page cache: tmp_path on the host; in the v2
    VM (whose / is 9p and /tmp an overlay) an ext4 on a brd RAM disk."""
    if TEST_CGROUP_VERSION == 1:
        yield tmp_path
        return
    mount_point = tmp_path / "ram"
    mount_point.mkdir()
    commands = [
        ["modprobe", "brd", "rd_nr=1", "rd_size=524288"],
        ["mkfs.ext4", "-q", "-F", "/dev/ram0"],
        ["mount", "-t", "ext4", "/dev/ram0", str(mount_point)],
    ]
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, timeout=60)
